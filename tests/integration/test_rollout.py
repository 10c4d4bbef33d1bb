"""Progressive delivery end to end (issue 8): a canary or shadow candidate declared in
models.yaml, applied to a real MLflow, fetched by the sidecar, routed by a real gunicorn server."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.load import LoadGenerator
from tests.support.metrics import metric_value
from tests.support.onnx_models import BuiltModel, write_mlp
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = [0.3] * 16


@pytest.fixture
def pipeline(mlflow_server: MlflowServer, tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(mlflow_server, tmp_path, interval=1.0)
    yield pipe
    pipe.stop()


def declare(
    pipe: Pipeline, name: str, production: BuiltModel, staging: BuiltModel,
    rollout: dict[str, Any] | None,
) -> None:  # fmt: skip
    """models.yaml: ``production`` in Production, ``staging`` in Staging, and the rollout."""
    model: dict[str, Any] = {
        "name": name,
        "versions": [
            {"source": pipe.add_file(production.path), "sha256": production.sha256,
             "stage": "Production"},
            {"source": pipe.add_file(staging.path), "sha256": staging.sha256, "stage": "Staging"},
        ],
    }  # fmt: skip
    if rollout is not None:
        model["rollout"] = rollout
    pipe.models_file.write_text(yaml.safe_dump({"models": [model]}, sort_keys=False))


def pinned(pipe: Pipeline, name: str, version: str) -> httpx.Response:
    return httpx.post(
        f"{pipe.server_url}/models/{name}/predict",
        json={"data": ROW},
        headers={"X-Model-Version": version},
        timeout=10,
    )


def start(pipe: Pipeline, name: str, candidate: str) -> None:
    pipe.start_sidecar("--model", name)
    pipe.start_server()
    wait_until(
        lambda: pinned(pipe, name, candidate).status_code == 200,
        timeout=120,
        what=f"the server to load candidate version {candidate}",
    )


def test_canary_share_sticky_keys_and_ending_without_a_failed_request(
    pipeline: Pipeline, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    stable = write_mlp(tmp_path / "built" / "stable.onnx", seed=51)
    candidate = write_mlp(tmp_path / "built" / "candidate.onnx", seed=52)
    declare(pipeline, name, stable, candidate, {"stage": "Staging", "mode": "canary", "weight": 10})
    pipeline.apply()
    v_stable, v_candidate = (
        pipeline.version_of(name, stable.sha256),
        pipeline.version_of(name, candidate.sha256),
    )
    start(pipeline, name, v_candidate)
    url = f"{pipeline.server_url}/models/{name}/predict"

    # 1. Without a routing key, about 10 % go to the candidate: within 4.5 standard deviations
    # of a binomial(n, 0.1) (a false alarm about once in 150,000 runs).
    n = 2000
    with httpx.Client(timeout=10) as client:
        answers = Counter(
            client.post(url, json={"data": ROW}).json()["modelVersion"] for _ in range(n)
        )
    assert set(answers) == {v_stable, v_candidate}, answers
    share = answers[v_candidate] / n
    tolerance = 4.5 * math.sqrt(0.1 * 0.9 / n)
    assert abs(share - 0.10) < tolerance, f"candidate share {share:.3f} over {n} requests"

    # 2. A routing key keeps its caller on one version; keys spread over both.
    sides: dict[str, set[str]] = {}
    with httpx.Client(timeout=10) as client:
        for key in (f"user-{i}" for i in range(200)):
            for _ in range(3):
                answer = client.post(url, json={"data": ROW}, headers={"X-Routing-Key": key})
                sides.setdefault(key, set()).add(answer.json()["modelVersion"])
    assert all(len(versions) == 1 for versions in sides.values()), sides
    keyed = Counter(next(iter(versions)) for versions in sides.values())
    assert keyed[v_candidate] > 0, keyed
    assert keyed[v_stable] > 0, keyed

    # 3. Ending the canary (weight 0) takes effect without a failed request.
    with LoadGenerator(url, {"data": ROW}, threads=8) as load:
        wait_until(lambda: load.versions()[v_candidate] > 5, what="canary traffic under load")
        declare(pipeline, name, stable, candidate, {"stage": "Staging", "mode": "canary",
                                                    "weight": 0})  # fmt: skip
        pipeline.apply()
        wait_until(
            lambda: pinned(pipeline, name, v_candidate).status_code != 200,
            timeout=60,
            what="the candidate to leave the server",
        )
        ended = time.monotonic()
        wait_until(
            lambda: sum(1 for o in load.snapshot() if o.started > ended) > 200,
            what="traffic after the canary ended",
        )
    failures = load.failures()
    assert not failures, f"{len(failures)} failed, first {failures[:3]}\n{pipeline.logs_tail()}"
    after = {o.version for o in load.snapshot() if o.started > ended}
    assert after == {v_stable}, after


def test_shadow_never_changes_answers_and_records_differences(
    pipeline: Pipeline, unique_name: str, tmp_path: Path
) -> None:
    name = unique_name
    stable = write_mlp(tmp_path / "built" / "stable.onnx", seed=61)
    candidate = write_mlp(tmp_path / "built" / "candidate.onnx", seed=62)
    declare(pipeline, name, stable, candidate, {"stage": "Staging", "mode": "shadow"})
    pipeline.apply()
    v_stable = pipeline.version_of(name, stable.sha256)
    v_candidate = pipeline.version_of(name, candidate.sha256)
    start(pipeline, name, v_candidate)
    expected = pinned(pipeline, name, v_stable).json()["prediction"]
    shadowed = pinned(pipeline, name, v_candidate).json()["prediction"]
    assert shadowed != expected, "the two test models must disagree for this test to mean anything"

    url = f"{pipeline.server_url}/models/{name}/predict"
    with httpx.Client(timeout=10) as client:
        answers = [client.post(url, json={"data": ROW}).json() for _ in range(200)]
    assert {a["modelVersion"] for a in answers} == {v_stable}
    assert all(a["prediction"] == expected for a in answers)

    wait_until(
        lambda: (
            metric_value(
                pipeline.server_url,
                "server_shadow_comparisons_total",
                model=name,
                result="different",
            )
            >= 100
        ),
        timeout=30,
        what="shadow differences recorded",
    )
