"""The oldest MLflow we serve, for real: an MLflow 2.x server (the seed's compose file runs 2.7.1)
from its own virtual environment.

validate, plan, apply and status from the reconciler CLI, and the sidecar that follows every
model (the deployed default) with a real server: nothing may depend on an MLflow 3 server.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.converters import ConvertedModel, assert_same, commit_to, declared_version
from tests.support.deploy import Deployment, deploy, post, write_models_file
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_mlflow2_fixture_is_a_live_2x_server(mlflow2_server: MlflowServer) -> None:
    assert httpx.get(f"{mlflow2_server.url}/health", timeout=10).status_code == 200
    version = mlflow2_server.version()
    assert version.split(".")[0] == "2", f"expected an MLflow 2.x server, got {version}"
    # Its registry API answers (what the reconciler and the sidecar call first).
    response = httpx.get(
        f"{mlflow2_server.url}/api/2.0/mlflow/registered-models/search", timeout=10
    )
    assert response.status_code == 200, response.text


OnMlflow2 = tuple[Deployment, "subprocess.CompletedProcess[str]"]
"""The deployment and the plan run before its first apply."""

KINDS = ("sklearn-random-forest", "sklearn-text-pipeline", "torch-export")


@pytest.fixture(scope="module")
def on_mlflow2(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow2_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
) -> Iterator[OnMlflow2]:
    """Models declared and applied on MLflow 2.x, served by a follow-all sidecar; the first
    plan's output too."""
    assert mlflow2_server.version().startswith("2.")
    pipeline = Pipeline(mlflow2_server, tmp_path_factory.mktemp("world-mlflow2"))
    suffix = uuid.uuid4().hex[:6]
    names = {kind: f"world2-{kind}-{suffix}" for kind in KINDS}
    versions = {}
    for kind, name in names.items():
        model = converted(kind)
        source = commit_to(pipeline.repo, model, kind)
        versions[name] = [declared_version(model, source, aliases=["champion"])]
    write_models_file(pipeline, versions)
    first_plan = pipeline.reconciler("plan", check=False)
    deploy(pipeline, versions, follow=[])
    yield Deployment(pipeline, names), first_plan
    pipeline.stop()


def test_validate_and_plan_work_against_mlflow2(
    on_mlflow2: OnMlflow2, mlflow2_server: MlflowServer
) -> None:
    deployment, first_plan = on_mlflow2
    assert first_plan.returncode == 2, first_plan.stdout + first_plan.stderr  # changes to make
    for name in deployment.names.values():
        assert f"+ model {name}" in first_plan.stdout, first_plan.stdout
    again = deployment.pipeline.reconciler("plan", check=False)
    assert again.returncode == 0, f"a plan after apply is not empty:\n{again.stdout}{again.stderr}"


def test_apply_registered_each_version_with_its_stage_and_alias_on_mlflow2(
    on_mlflow2: OnMlflow2, mlflow2_server: MlflowServer
) -> None:
    deployment, _ = on_mlflow2
    for name in deployment.names.values():
        model = httpx.get(
            f"{mlflow2_server.url}/api/2.0/mlflow/registered-models/get",
            params={"name": name},
            timeout=10,
        ).json()["registered_model"]
        assert [a["alias"] for a in model.get("aliases", [])] == ["champion"], model
        (latest,) = model["latest_versions"]
        assert latest["current_stage"] == "Production", latest


def test_the_follow_all_sidecar_serves_every_model_from_mlflow2(
    on_mlflow2: OnMlflow2,
    converted: Callable[[str], ConvertedModel],
) -> None:
    deployment, _ = on_mlflow2
    pipeline = deployment.pipeline
    assert httpx.get(f"{pipeline.sidecar_url}/readyz", timeout=10).status_code == 200
    for kind, name in deployment.names.items():
        model = converted(kind)
        # Each gunicorn worker loads the volume on its own: on a loaded machine the second
        # worker may still be loading the torch directory when the first already serves it.
        url, request = f"{pipeline.server_url}/models/{name}/predict", model.predict_body()
        wait_until(
            lambda url=url, request=request: all(
                httpx.post(url, json=request, timeout=30).status_code == 200 for _ in range(8)
            ),
            timeout=120,
            what=f"every worker serving {name}",
        )
        body = post(pipeline, f"/models/{name}/predict", model.predict_body())
        assert body["modelVersion"] == "1"
        assert_same(body["prediction"], next(iter(model.expected().values())), where=name)


def test_status_sees_the_declared_versions_served(
    on_mlflow2: OnMlflow2,
) -> None:
    deployment, _ = on_mlflow2
    pipeline: Pipeline = deployment.pipeline
    result = pipeline.reconciler(
        "status", "--server", pipeline.server_url, "--timeout", "60", check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
