"""apply starts a progressive rollout, promote carries it to Production or rolls it back:
against the in-memory registry, pods made of prometheus_client metrics, and a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.registry import MANAGED_TAG, ROLLOUT_TAG, SHA256_TAG, STAGE_TAG, Stage
from contracts.rollout import Rollout, RolloutMode
from reconciler.apply import Audit, LockOptions, apply
from reconciler.plan import make_plan
from reconciler.progressive import PROGRESSIVE_TAG, Phase, ProgressiveState
from reconciler.promote import Ending, NoMetricsError, PromoteOptions, Promoter, exit_code
from reconciler.render import promote_json, promote_markdown, promote_text
from reconciler.spec import Desired, ModelsFile
from tests.reconciler.fakes import FakeRegistry
from tests.reconciler.test_apply import Clock
from tests.reconciler.test_scrape import Pod
from tests.support.onnx_models import BuiltModel

AUDIT = Audit(applied_by="tester", git_commit="abc")
LOCK = LockOptions(name="lock", wait_seconds=0)
STRATEGY = {"steps": ["shadow", 50], "pause_seconds": 30, "min_requests": 40,
            "max_error_rate": 0.05, "max_disagreement": 0.2}  # fmt: skip


class Traffic:
    """Two pods; every scrape of a pod first answers ``per_scrape`` requests the way the
    server's current rollout tag routes them (``failing``: the candidate's share of 5xx)."""

    def __init__(self, registry: FakeRegistry, failing: float = 0.0, per_scrape: int = 20):
        self.registry = registry
        self.failing = failing
        self.per_scrape = per_scrape
        self.pods = {"http://10.0.0.1:9090/metrics": Pod(), "http://10.0.0.2:9090/metrics": Pod()}
        self.hook: Callable[[], None] | None = None

    def fetch(self, url: str) -> str:
        if self.hook is not None:
            self.hook()
        pod = self.pods[url]
        tag = self.registry.models["m"].tags.get(ROLLOUT_TAG)
        rollout = Rollout.parse(tag) if tag else None
        n = self.per_scrape
        stable = "1"
        if rollout is None:
            pod.answer(stable, 200, 0.002, n=n)
        elif rollout.mode is RolloutMode.SHADOW:
            pod.answer(stable, 200, 0.002, n=n)
            pod.shadow.labels("m", rollout.candidate_version, "same").inc(n)
        else:
            to_candidate = round(n * rollout.weight / 100)
            errors = round(to_candidate * self.failing)
            pod.answer(stable, 200, 0.002, n=n - to_candidate)
            pod.answer(rollout.candidate_version, 200, 0.002, n=to_candidate - errors)
            pod.answer(rollout.candidate_version, 500, 0.002, n=errors)
        return pod.text()


@pytest.fixture
def started(tmp_path: Path, make_onnx: Callable[..., BuiltModel]) -> tuple[FakeRegistry, Desired]:
    """v1 Production in MLflow; models.yaml declares v2 Production with a strategy; applied."""
    v1, v2 = make_onnx("v1.onnx", seed=1), make_onnx("v2.onnx", seed=2)
    registry = FakeRegistry({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version(
        "m", "s3://b/1", None, {SHA256_TAG: v1.sha256, STAGE_TAG: "Production"}, None
    )
    registry.set_stage("m", "1", Stage.PRODUCTION)
    registry.set_alias("m", "live", "1")
    document: dict[str, Any] = {"models": [{"name": "m", "progressive": STRATEGY, "versions": [
        {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
        {"source": "models/v2.onnx", "sha256": v2.sha256, "stage": "Production",
         "aliases": ["live"]},
    ]}]}  # fmt: skip
    desired = Desired(tmp_path / "models.yaml", ModelsFile.model_validate(document))
    result = apply(registry, desired, AUDIT, LOCK)
    assert result.ok, result.failures
    return registry, desired


def promoter(registry: FakeRegistry, desired: Desired, traffic: Traffic, clock: Clock,
             timeout: float | None = None) -> Promoter:  # fmt: skip
    options = PromoteOptions(LOCK, "tester", interval=5.0, timeout=timeout)
    return Promoter(registry, desired, list(traffic.pods), options, fetch=traffic.fetch,
                    clock=clock, sleep=clock.sleep)  # fmt: skip


def state_of(registry: FakeRegistry) -> ProgressiveState:
    return ProgressiveState.parse("m", registry.models["m"].tags[PROGRESSIVE_TAG])


def test_apply_starts_the_first_step_and_moves_no_stage(
    started: tuple[FakeRegistry, Desired],
) -> None:
    registry, desired = started
    model = registry.models["m"]
    assert (model.versions["1"].stage, model.versions["2"].stage) == (Stage.PRODUCTION, Stage.NONE)
    assert model.aliases == {"live": "1"}
    assert Rollout.parse(model.tags[ROLLOUT_TAG]) == Rollout("2", RolloutMode.SHADOW, 100.0)
    assert (state_of(registry).phase, state_of(registry).step) == (Phase.RUNNING, 0)
    # The next apply leaves the rollout to promote: nothing to do, not even the lock.
    registry.calls.clear()
    again = apply(registry, desired, AUDIT, LOCK)
    assert again.ok
    assert not again.first_plan.has_changes
    assert registry.calls == []


def test_a_good_candidate_passes_every_step_to_production(
    started: tuple[FakeRegistry, Desired],
) -> None:
    registry, desired = started
    clock = Clock()
    outcomes = promoter(registry, desired, Traffic(registry), clock).run()
    assert [o.ending for o in outcomes] == [Ending.PROMOTED]
    assert exit_code(outcomes) == 0
    assert [(s.position, s.move.value) for s in outcomes[0].steps] == [
        ("step 1 of 2 (shadow)", "advance"), ("step 2 of 2 (canary 50%)", "promote"),
    ]  # fmt: skip
    assert all(s.seconds >= 30 for s in outcomes[0].steps)
    model = registry.models["m"]
    assert (model.versions["1"].stage, model.versions["2"].stage) == (
        Stage.ARCHIVED,
        Stage.PRODUCTION,
    )
    assert model.versions["2"].tags[STAGE_TAG] == "Production"
    assert model.aliases == {"live": "2"}
    assert ROLLOUT_TAG not in model.tags
    assert state_of(registry).phase is Phase.PROMOTED
    assert not make_plan(desired.file, registry.read(["m"])).has_changes
    report = promote_text(outcomes)
    assert report.startswith("m v1 -> v2: promoted\n  step 1 of 2 (shadow), 30 s: ")
    assert "v2 is Production (update stage m v2: None -> Production; " in report
    assert '"ending": "promoted"' in promote_json(outcomes)
    assert "| step 2 of 2 \\(canary 50\\%\\) |" in promote_markdown(outcomes)
    # Every write happened under the apply lock.
    calls = registry.calls
    promoted = calls.index(("set_stage", "m", "2", "Production"))
    assert max(i for i, c in enumerate(calls[:promoted]) if c[0] == "lock") > max(
        (i for i, c in enumerate(calls[:promoted]) if c[0] == "unlock"), default=-1
    )


def test_a_failing_candidate_is_rolled_back_within_its_step(
    started: tuple[FakeRegistry, Desired],
) -> None:
    registry, desired = started
    clock = Clock()
    traffic = Traffic(registry, failing=0.1)
    outcomes = promoter(registry, desired, traffic, clock).run()
    assert [o.ending for o in outcomes] == [Ending.ROLLED_BACK]
    assert exit_code(outcomes) == 1
    last = outcomes[0].steps[-1]
    assert (last.position, last.move.value) == ("step 2 of 2 (canary 50%)", "roll back")
    assert last.seconds < 30  # judged once min_requests arrived, not at the end of the step
    model = registry.models["m"]
    assert ROLLOUT_TAG not in model.tags
    assert (model.versions["1"].stage, model.versions["2"].stage) == (Stage.PRODUCTION, Stage.NONE)
    assert model.aliases == {"live": "1"}
    ended = state_of(registry)
    assert (ended.phase, ended.breach and ended.breach.limit) == (
        Phase.ROLLED_BACK,
        "max_error_rate",
    )
    assert "error rate 0.1 (4 of 40 answers 5xx) past max_error_rate 0.05" in ended.reason
    # plan and apply leave it there; promote has nothing more to do.
    plan = make_plan(desired.file, registry.read(["m"]))
    assert not plan.has_changes
    assert "rolled back at step 2 of 2 (canary 50%)" in [c.after for c in plan.changes][-1]
    assert promoter(registry, desired, traffic, clock).run() == []


def test_a_rollout_whose_runner_died_is_resumed_with_a_fresh_window(
    started: tuple[FakeRegistry, Desired],
) -> None:
    registry, desired = started
    clock = Clock()
    traffic = Traffic(registry)
    first = promoter(registry, desired, traffic, clock, timeout=10).run()
    assert [o.ending for o in first] == [Ending.RUNNING]
    assert exit_code(first) == 3
    stalled = state_of(registry)
    clock.now += 3600
    outcomes = promoter(registry, desired, traffic, clock).run()
    assert [o.ending for o in outcomes] == [Ending.PROMOTED]
    assert outcomes[0].steps[0].position == stalled.position()
    assert outcomes[0].steps[0].seconds < 60  # the hour nobody watched was not judged


def test_a_rollout_changed_by_another_run_is_left_to_it(
    started: tuple[FakeRegistry, Desired],
) -> None:
    registry, desired = started
    clock = Clock()
    traffic = Traffic(registry)

    def another_run() -> None:
        current = state_of(registry)
        if current.step_started_at < clock.now - 10:
            registry.models["m"].tags[PROGRESSIVE_TAG] = current.restarted(clock.now).to_json()

    traffic.hook = another_run
    outcomes = promoter(registry, desired, traffic, clock).run()
    assert [o.ending for o in outcomes] == [Ending.SUPERSEDED]
    assert registry.models["m"].versions["2"].stage is Stage.NONE


def test_without_a_running_rollout_promote_does_nothing(tmp_path: Path) -> None:
    registry = FakeRegistry()
    desired = Desired(tmp_path / "models.yaml", ModelsFile.model_validate({"models": []}))
    outcomes = Promoter(registry, desired, [], PromoteOptions(LOCK, "tester")).run()
    assert outcomes == []
    assert promote_text(outcomes) == "No progressive rollout is running.\n"
    assert registry.calls == []


def test_a_running_rollout_needs_metrics(started: tuple[FakeRegistry, Desired]) -> None:
    registry, desired = started
    with pytest.raises(NoMetricsError, match="--metrics URL"):
        Promoter(registry, desired, [], PromoteOptions(LOCK, "tester")).run()
