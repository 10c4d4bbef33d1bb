"""Progressive rollouts end to end (issue 16): a real MLflow, sidecar and gunicorn server under
steady client load; plan, apply, promote and status run as CI runs them.

A candidate that fails one request in ten (an ONNX graph that cannot run on some inputs, the
clients send such an input every tenth request) is rolled back within its first step while the
stable version keeps answering; then a good candidate goes through every step to Production
without a failed request.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contracts.registry import ROLLOUT_TAG
from tests.support.load import LoadGenerator, Outcome
from tests.support.onnx_models import FAULT_THRESHOLD, BuiltModel, write_faulty, write_mlp
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = [0.3] * 16
ODD = [FAULT_THRESHOLD + 10.0] + [0.3] * 15
"""A valid input on which the faulty graph fails; every tenth request sends it."""
STRATEGY = {"steps": [20, 50], "pause_seconds": 3, "min_requests": 40, "max_error_rate": 0.05}
GOOD = {"steps": ["shadow", 20, 50], "max_p99_latency_ratio": 4}
"""The good candidate's rollout starts with a shadow step, and judges latency too (the faulty
one may be slower as well: a batch holding its odd input fails, then each request in it runs
alone; this test wants the error rate to decide)."""
SHOW = os.environ.get("MLGITOPS_SHOW_OUTPUT")
"""Set: print what each command printed (the README's figures come from such a run)."""


@pytest.fixture
def pipeline(mlflow_server: MlflowServer, tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(mlflow_server, tmp_path, interval=1.0)
    yield pipe
    pipe.stop()


def declare(
    pipe: Pipeline, name: str, versions: list[tuple[BuiltModel, str]], **strategy: Any
) -> None:
    """models.yaml: these (file, stage) versions of ``name``, with the progressive strategy
    (STRATEGY, and ``strategy`` over it)."""
    entries = [
        {"source": pipe.add_file(built.path), "sha256": built.sha256, "stage": stage}
        for built, stage in versions
    ]
    progressive = {**STRATEGY, **strategy}
    model: dict[str, Any] = {"name": name, "progressive": progressive, "versions": entries}
    pipe.models_file.write_text(yaml.safe_dump({"models": [model]}, sort_keys=False))


def run(pipe: Pipeline, *args: str, expect: int) -> str:
    started = time.monotonic()
    result = pipe.reconciler(*args, check=False)
    if SHOW:
        took = time.monotonic() - started
        print(f"\n$ reconciler {' '.join(args)}  # exit {result.returncode}, {took:.1f} s")
        print(result.stdout)
    assert result.returncode == expect, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def promote(pipe: Pipeline, expect: int) -> tuple[dict[str, Any], str]:
    """Run promote on the server's metrics: its JSON report (one rollout) and its text."""
    report = pipe.workdir / "promote.json"
    text = run(pipe, "promote", "--metrics", f"{pipe.server_url}/metrics", "--interval", "0.5",
               "--timeout", "120", "--out", str(report), expect=expect)  # fmt: skip
    rollouts: list[dict[str, Any]] = json.loads(report.read_text())["rollouts"]
    assert len(rollouts) == 1, rollouts
    return rollouts[0], text


def registry_view(pipe: Pipeline, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(version -> stage, registered-model tags) as MLflow's REST API shows them."""
    mlflow = pipe.mlflow.url
    model = httpx.get(f"{mlflow}/api/2.0/mlflow/registered-models/get",
                      params={"name": name}, timeout=10).json()["registered_model"]  # fmt: skip
    versions = httpx.get(f"{mlflow}/api/2.0/mlflow/model-versions/search",
                         params={"filter": f"name='{name}'"}, timeout=10).json()  # fmt: skip
    stages = {v["version"]: v["current_stage"] for v in versions["model_versions"]}
    return stages, {t["key"]: t["value"] for t in model.get("tags", [])}


def pinned(pipe: Pipeline, name: str, version: str) -> int:
    return httpx.post(f"{pipe.server_url}/models/{name}/predict", json={"data": ROW},
                      headers={"X-Model-Version": version}, timeout=10).status_code  # fmt: skip


def after(load: LoadGenerator, moment: float) -> list[Outcome]:
    return [o for o in load.snapshot() if o.started > moment]


def test_a_faulty_candidate_is_rolled_back_then_a_good_one_is_promoted_under_load(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    name = f"churn-{uuid.uuid4().hex[:6]}"  # short: the README shows this test's output
    built = tmp_path / "built"
    stable, faulty, good = (
        write_mlp(built / "stable.onnx", seed=81),
        write_faulty(built / "faulty.onnx", seed=82),
        write_mlp(built / "good.onnx", seed=83),
    )
    declare(pipeline, name, [(stable, "Production")])
    pipeline.apply()
    pipeline.start_sidecar("--model", name)
    pipeline.start_server()
    pipeline.wait_served(name, "1")
    url = f"{pipeline.server_url}/models/{name}/predict"
    bodies = [{"data": ODD}] + [{"data": ROW}] * 9
    with LoadGenerator(url, {"data": ROW}, threads=3, bodies=bodies, pause=0.01) as load:
        wait_until(lambda: len(load.snapshot()) > 100, what="steady load on the stable version")

        # 1. The faulty candidate: apply starts its first step; promote rolls it back.
        declare(pipeline, name, [(stable, "Archived"), (faulty, "Production")])
        applied = run(pipeline, "apply", expect=0)  # its first plan is the pull request's
        started = f"+ start progressive rollout v1 -> (new {faulty.sha256[:12]}) (steps 20%, 50%)"
        assert started in applied
        assert "done: start progressive rollout v1 -> v2 (steps 20%, 50%)" in applied
        status = run(pipeline, "status", "--server", pipeline.server_url, expect=0)
        assert f"{name}: progressive rollout v1 -> v2: running, step 1 of 2 (canary 20%)" in status
        assert f"{pipeline.server_url} {name} v1" in status
        rolled_back, text = promote(pipeline, expect=1)
        assert f"{name} v1 -> v2: rolled back\n  step 1 of 2 (canary 20%), " in text
        assert "past max_error_rate 0.05" in text
        assert rolled_back["ending"] == "rolled back", rolled_back
        assert [(s["step"], s["move"]) for s in rolled_back["steps"]] == [
            ("step 1 of 2 (canary 20%)", "roll back")
        ]
        breached = [c for c in rolled_back["steps"][0]["checks"] if not c["ok"]]
        assert [c["limit"] for c in breached] == ["max_error_rate"], breached
        assert breached[0]["value"] > 0.05
        assert rolled_back["state"]["breach"]["limit"] == "max_error_rate"
        stages, tags = registry_view(pipeline, name)
        assert stages == {"1": "Production", "2": "None"}
        assert ROLLOUT_TAG not in tags
        wait_until(lambda: pinned(pipeline, name, "2") != 200, timeout=60,
                   what="the rolled-back candidate to leave the server")  # fmt: skip
        settled = wait_until(lambda: only(load, "1"), timeout=60,
                             what="every answer from the stable version again")  # fmt: skip
        plan = run(pipeline, "plan", expect=0)
        assert "progressive rollout v1 -> v2: rolled back at step 1 of 2 (canary 20%)" in plan
        assert f"No changes to make. Production of {name} is held by a progressive" in plan

        # 2. A good candidate: every step, then Production; no request fails.
        declare(pipeline, name, [(stable, "Archived"), (good, "Production")], **GOOD)
        run(pipeline, "apply", expect=0)
        promoted, text = promote(pipeline, expect=0)
        assert f"{name} v1 -> v3: promoted\n" in text
        assert promoted["ending"] == "promoted", promoted
        assert [(s["step"], s["move"]) for s in promoted["steps"]] == [
            ("step 1 of 3 (shadow)", "advance"), ("step 2 of 3 (canary 20%)", "advance"),
            ("step 3 of 3 (canary 50%)", "promote"),
        ]  # fmt: skip
        shadow, *canary = (s["figures"] for s in promoted["steps"])
        runs = shadow["shadow_same"] + shadow["shadow_different"] + shadow["shadow_errors"]
        assert runs >= 40, shadow
        assert shadow["shadow_errors"] == 0, shadow
        assert all(figures["candidate_requests"] >= 100 for figures in canary), canary
        judged = [
            [c["limit"] for c in s["checks"] if c["value"] is not None] for s in promoted["steps"]
        ]
        latency = ["max_error_rate", "max_p99_latency_ratio"]
        assert judged == [["max_error_rate"], latency, latency], promoted
        stages, tags = registry_view(pipeline, name)
        assert stages == {"1": "Archived", "2": "None", "3": "Production"}
        assert ROLLOUT_TAG not in tags
        assert "still differs" not in text, text  # MLflow matches models.yaml again
        pipeline.wait_served(name, "3")
        wait_until(lambda: only(load, "3"), timeout=60, what="every answer from v3")
        status = run(pipeline, "status", "--server", pipeline.server_url, expect=0)
        assert f"{name}: progressive rollout v1 -> v3: promoted after 3 step(s)" in status

    failures = load.failures()
    if SHOW:
        answered_by = load.versions()
        print(
            f"load: {len(load.snapshot())} requests, {len(failures)} failed, answers {answered_by}"
        )
    # Only the faulty candidate failed, only on the odd input, only before its rollback.
    assert failures, "the faulty candidate must have failed some requests for this to mean much"
    assert all(o.status == 500 and o.sent == 0 and "version '2'" in (o.error or "")
               for o in failures), failures[:3]  # fmt: skip
    assert not [o for o in after(load, settled) if o.status != 200]
    answered = {o.version for o in load.snapshot() if o.status == 200}
    assert answered == {"1", "2", "3"}, answered


def only(load: LoadGenerator, version: str, last: int = 100) -> float | None:
    """The time the last ``last`` requests started, once every one of them was answered by
    ``version``; None until then."""
    recent = load.snapshot()[-last:]
    if len(recent) < last or any(o.status != 200 or o.version != version for o in recent):
        return None
    return recent[0].started
