"""The registry as companies have it: another team's model, registered by hand, beside ours.

It is listed by plan (one line), untouched by apply, and skipped by the sidecar that follows every
model (the deployed default), which stays ready and serves the managed models.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.converters import (
    ConvertedModel,
    commit_to,
    declared_version,
    register_by_hand,
)
from tests.support.deploy import deploy, write_models_file
from tests.support.metrics import metric_value
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _registered_model(mlflow: MlflowServer, name: str) -> dict[str, Any]:
    """The registered model and its versions as MLflow's REST API shows them."""
    model = httpx.get(
        f"{mlflow.url}/api/2.0/mlflow/registered-models/get", params={"name": name}, timeout=10
    ).json()["registered_model"]
    versions = httpx.get(
        f"{mlflow.url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{name}'"},
        timeout=10,
    ).json()["model_versions"]
    model.pop("last_updated_timestamp", None)
    return {"model": model, "versions": versions}


@dataclass(frozen=True, slots=True)
class Registry:
    pipeline: Pipeline
    theirs: str
    ours: str
    before: dict[str, Any]
    """Their model as MLflow showed it before anything of ours ran."""
    first_plan: subprocess.CompletedProcess[str]
    """``plan`` before the first apply."""


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, converted: Callable[[str], ConvertedModel]
) -> Iterator[Registry]:
    """A registry of its own (the sidecar follows every model in it): theirs, then ours applied."""
    workdir = tmp_path_factory.mktemp("world-registry")
    mlflow = MlflowServer(workdir / "mlflow").start()
    theirs = f"team-fraud-{uuid.uuid4().hex[:6]}"
    ours = f"world-managed-{uuid.uuid4().hex[:6]}"
    pipeline = Pipeline(mlflow, workdir / "pipeline")
    try:
        register_by_hand(mlflow.url, theirs, converted("sklearn-random-forest"), workdir / "theirs")
        before = _registered_model(mlflow, theirs)
        model = converted("sklearn-logistic-regression")
        versions = {ours: [declared_version(model, commit_to(pipeline.repo, model, "ours"))]}
        write_models_file(pipeline, versions)
        first_plan = pipeline.reconciler("plan", check=False)
        deploy(pipeline, versions, follow=[])  # the sidecar follows every model
        yield Registry(pipeline, theirs, ours, before, first_plan)
    finally:
        pipeline.stop()
        mlflow.stop()


def _lines_naming(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if name in line]


def _lines_naming(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if name in line]


def test_plan_lists_the_unmanaged_model_in_one_line_before_and_after_apply(
    registry: Registry,
) -> None:
    first = registry.first_plan
    assert first.returncode == 2, first.stdout + first.stderr  # ours is to be created
    assert len(_lines_naming(first.stdout, registry.theirs)) == 1, first.stdout
    again = registry.pipeline.reconciler("plan", check=False)
    assert again.returncode == 0, again.stdout + again.stderr  # theirs is no change to make
    assert len(_lines_naming(again.stdout, registry.theirs)) == 1, again.stdout


def test_apply_leaves_the_unmanaged_model_as_it_was(registry: Registry) -> None:
    after = _registered_model(registry.pipeline.mlflow, registry.theirs)
    assert after == registry.before, "apply changed a model it does not own"


def test_the_follow_all_sidecar_skips_it_counts_it_logs_it_once_and_stays_ready(
    registry: Registry,
) -> None:
    pipeline, sidecar = registry.pipeline, registry.pipeline.sidecar_url
    wait_until(
        lambda: metric_value(sidecar, "sidecar_unmanaged_models") == 1,
        timeout=60,
        what="the hand-registered model counted as unmanaged",
    )
    assert httpx.get(f"{sidecar}/readyz", timeout=10).status_code == 200
    assert not (pipeline.volume / registry.theirs).exists(), "an unmanaged model was published"
    assert httpx.get(f"{pipeline.server_url}/v2/health/ready", timeout=10).status_code == 200
    # Logged once, not once per poll: let two more polls pass, then count.
    polls = metric_value(sidecar, "sidecar_checks_total", model=registry.ours)
    wait_until(
        lambda: metric_value(sidecar, "sidecar_checks_total", model=registry.ours) >= polls + 2,
        timeout=60,
        what="two more polls",
    )
    assert pipeline.sidecar is not None
    log = pipeline.sidecar.log_path.read_text()
    mentions = [line for line in _lines_naming(log, registry.theirs) if "unmanaged" in line]
    assert len(mentions) == 1, mentions
