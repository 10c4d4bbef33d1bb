"""Every source kind a team produces registers, gates, fetches and serves (issue 11).

``models:/m-<id>``, the LoggedModel's storage URI and ``runs:/<id>/model``
(``mlflow.onnx.log_model`` in a run, weights as external data), ``runs:/<id>/path`` and
``mlflow-artifacts:`` (``MlflowClient.log_artifact``), ``models:/<name>/<version>`` and
``models:/<name>@<alias>`` (a training script's own registered model), ``s3://`` (moto's server
mode), a repository file and a repository directory whose weights are external data. Real
processes only; each answer equals onnxruntime in-process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.converters import ConvertedModel, declared_version
from tests.support.deploy import Deployment, assert_serves, deploy, deploy_sources
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer, MotoS3Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCES = {
    "logged-model-id": "torch-export",
    "logged-model-storage": "torch-export",
    "logged-model-run": "sklearn-random-forest",  # skl2onnx's defaults: a ZipMap output
    "runs-uri": "lightgbm-classifier",
    "mlflow-artifacts": "sklearn-logistic-regression",
    "repo-file": "sklearn-random-forest",
    "repo-dir": "torch-export",
    "model-version": "sklearn-text-pipeline",
    "model-alias": "sklearn-column-transformer",
}
"""Source kind -> the converter model declared through it."""


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
) -> Iterator[Deployment]:
    pipeline = Pipeline(mlflow_server, tmp_path_factory.mktemp("world-sources"))
    yield deploy_sources(pipeline, {kind: converted(m) for kind, m in SOURCES.items()})
    pipeline.stop()


@pytest.mark.parametrize("source_kind", SOURCES)
def test_each_source_kind_is_registered_fetched_and_served(
    deployment: Deployment, converted: Callable[[str], ConvertedModel], source_kind: str
) -> None:
    assert_serves(
        deployment.pipeline, deployment.names[source_kind], converted(SOURCES[source_kind])
    )


def test_a_plan_after_apply_changes_nothing(deployment: Deployment) -> None:
    result = deployment.pipeline.reconciler("plan", check=False)
    assert result.returncode == 0, f"plan after apply is not empty:\n{result.stdout}"


def test_an_s3_source_is_registered_fetched_and_served(
    tmp_path: Path,
    mlflow_pg_s3: MlflowServer,
    moto_s3: MotoS3Server,
    converted: Callable[[str], ConvertedModel],
) -> None:
    model = converted("sklearn-random-forest")
    name = f"world-src-s3-{uuid.uuid4().hex[:6]}"
    uri = moto_s3.put_object("models", f"{name}/model.onnx", model.path.read_bytes())
    pipeline = Pipeline(mlflow_pg_s3, tmp_path, env=moto_s3.client_env)
    deploy(pipeline, {name: [declared_version(model, uri)]}, env=moto_s3.client_env)
    try:
        assert_serves(pipeline, name, model)
    finally:
        pipeline.stop()
