"""A progressive rollout's limits and moves: plain data in, a decision out (table-driven)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.progression import Move, checks, decide
from reconciler.progressive import Breach, Phase, ProgressiveState, Step, steps_of
from reconciler.scrape import Figures
from reconciler.spec import ProgressiveSpec

SPEC = ProgressiveSpec(
    steps=["shadow", 10, 50],
    pause_seconds=60,
    min_requests=100,
    max_error_rate=0.05,
    max_p99_latency_ratio=1.5,
    max_disagreement=0.1,
)
SHADOW, CANARY = Step.of("shadow"), Step.of(10)
T0 = 1_000.0


def state(step: int = 1, **changes: Any) -> ProgressiveState:
    values: dict[str, Any] = {
        "candidate_version": "3", "candidate_sha256": "c" * 64, "stable_version": "2",
        "steps": steps_of(SPEC.steps), "step": step, "step_started_at": T0,
        "phase": Phase.RUNNING,
    }  # fmt: skip
    return ProgressiveState(**{**values, **changes})


def canary(n: int = 200, errors: int = 0, p99: float = 0.002, stable_p99: float = 0.002,
           stable: int = 1000) -> Figures:  # fmt: skip
    return Figures(candidate_requests=n, candidate_errors=errors, stable_requests=stable,
                   candidate_p99=p99, stable_p99=stable_p99)  # fmt: skip


def shadow(same: int = 200, different: int = 0, errors: int = 0) -> Figures:
    return Figures(same=same, different=different, shadow_errors=errors)


# (step, figures) -> {limit: (value or None, ok)}
LIMIT_CASES = [
    pytest.param(CANARY, canary(), {"max_error_rate": (0.0, True),
                                     "max_p99_latency_ratio": (1.0, True)}, id="canary-clean"),
    pytest.param(CANARY, canary(n=99, errors=50), {"max_error_rate": (None, True),
                 "max_p99_latency_ratio": (None, True)}, id="canary-too-few-to-judge"),
    pytest.param(CANARY, canary(errors=10), {"max_error_rate": (0.05, True),
                 "max_p99_latency_ratio": (1.0, True)}, id="canary-error-rate-at-the-bound"),
    pytest.param(CANARY, canary(errors=11), {"max_error_rate": (0.055, False),
                 "max_p99_latency_ratio": (1.0, True)}, id="canary-error-rate-past"),
    pytest.param(CANARY, canary(p99=0.0031), {"max_error_rate": (0.0, True),
                 "max_p99_latency_ratio": (1.55, False)}, id="canary-slower-past-the-ratio"),
    pytest.param(CANARY, canary(p99=0.0031, stable=99), {"max_error_rate": (0.0, True),
                 "max_p99_latency_ratio": (None, True)}, id="canary-stable-too-few-for-latency"),
    pytest.param(CANARY, canary(stable_p99=0.0), {"max_error_rate": (0.0, True),
                 "max_p99_latency_ratio": (None, True)}, id="canary-stable-p99-zero"),
    pytest.param(SHADOW, shadow(), {"max_error_rate": (0.0, True),
                 "max_disagreement": (0.0, True)}, id="shadow-clean"),
    pytest.param(SHADOW, shadow(same=180, different=20), {"max_error_rate": (0.0, True),
                 "max_disagreement": (0.1, True)}, id="shadow-disagreement-at-the-bound"),
    pytest.param(SHADOW, shadow(same=170, different=30), {"max_error_rate": (0.0, True),
                 "max_disagreement": (0.15, False)}, id="shadow-disagreement-past"),
    pytest.param(SHADOW, shadow(same=180, errors=20), {"max_error_rate": (0.1, False),
                 "max_disagreement": (0.0, True)}, id="shadow-runs-failing"),
    pytest.param(SHADOW, shadow(same=50, different=49), {"max_error_rate": (None, True),
                 "max_disagreement": (None, True)}, id="shadow-too-few-to-judge"),
]  # fmt: skip


@pytest.mark.parametrize(("step", "seen", "expected"), LIMIT_CASES)
def test_limits(step: Step, seen: Figures, expected: dict[str, tuple[float | None, bool]]) -> None:
    found = {c.limit: (None if c.value is None else round(c.value, 6), c.ok)
             for c in checks(SPEC, step, seen)}  # fmt: skip
    assert found == expected


def test_a_p99_is_judged_on_a_hundred_answers_at_least() -> None:
    spec = ProgressiveSpec(steps=[10], min_requests=40, max_p99_latency_ratio=1.5)
    few, enough = canary(n=99, p99=0.01), canary(n=100, p99=0.01)
    assert [(c.limit, c.value) for c in checks(spec, CANARY, few)] == [
        ("max_error_rate", 0.0), ("max_p99_latency_ratio", None),
    ]  # fmt: skip
    assert [(c.limit, c.ok) for c in checks(spec, CANARY, enough)] == [
        ("max_error_rate", True), ("max_p99_latency_ratio", False),
    ]  # fmt: skip


def test_at_a_100_percent_share_latency_has_nothing_to_compare_with() -> None:
    spec = ProgressiveSpec(steps=[100], max_p99_latency_ratio=1.5)
    assert [c.limit for c in checks(spec, Step.of(100), canary(stable=0))] == ["max_error_rate"]


@pytest.mark.parametrize(
    ("rejected", "stable_rejected", "stable", "expected"),
    [
        (10, 50, 1000, (0.0, True)),  # the same share of bad inputs: the inputs, not the model
        (30, 50, 1000, (0.1, True)),
        (31, 50, 1000, (0.105, False)),  # the candidate refuses what the stable version takes
        (31, 0, 99, (None, True)),  # too few stable answers to compare with
    ],
)
def test_a_candidate_rejecting_more_inputs_than_the_stable_version(
    rejected: int, stable_rejected: int, stable: int, expected: tuple[float | None, bool]
) -> None:
    spec = ProgressiveSpec(steps=[10], min_requests=100, max_rejection_increase=0.1)
    seen = Figures(candidate_requests=200, candidate_rejected=rejected, stable_requests=stable,
                   stable_rejected=stable_rejected)  # fmt: skip
    (check,) = [c for c in checks(spec, CANARY, seen) if c.limit == "max_rejection_increase"]
    assert (None if check.value is None else round(check.value, 6), check.ok) == expected
    assert [c.limit for c in checks(spec, Step.of(100), seen)] == ["max_error_rate"]


def test_limits_not_declared_are_not_judged() -> None:
    spec = ProgressiveSpec(steps=["shadow", 10])
    assert [c.limit for c in checks(spec, CANARY, canary(p99=1.0))] == ["max_error_rate"]
    assert [c.limit for c in checks(spec, SHADOW, shadow(different=900))] == ["max_error_rate"]


# (state, figures, seconds since the step started) -> (move, step after, phase after, limit)
MOVE_CASES = [
    pytest.param(state(0), shadow(), 30, (Move.WAIT, 0, Phase.RUNNING, None),
                 id="held-but-the-pause-is-not-over"),
    pytest.param(state(0), shadow(same=40), 600, (Move.WAIT, 0, Phase.RUNNING, None),
                 id="pause-over-but-too-few-requests"),
    pytest.param(state(0), shadow(), 60, (Move.ADVANCE, 1, Phase.RUNNING, None),
                 id="shadow-step-held-advances"),
    pytest.param(state(1), canary(), 61, (Move.ADVANCE, 2, Phase.RUNNING, None),
                 id="canary-step-held-advances"),
    pytest.param(state(2), canary(), 60, (Move.PROMOTE, 2, Phase.PROMOTED, None),
                 id="last-step-held-promotes"),
    pytest.param(state(1), canary(errors=30), 1, (Move.ROLL_BACK, 1, Phase.ROLLED_BACK,
                 "max_error_rate"), id="a-breach-rolls-back-at-once-not-at-the-step-end"),
    pytest.param(state(2), canary(p99=0.01), 600, (Move.ROLL_BACK, 2, Phase.ROLLED_BACK,
                 "max_p99_latency_ratio"), id="slower-on-the-last-step-rolls-back"),
    pytest.param(state(0), shadow(same=100, different=100), 5, (Move.ROLL_BACK, 0,
                 Phase.ROLLED_BACK, "max_disagreement"), id="shadow-disagreeing-rolls-back"),
    pytest.param(state(1), canary(stable=99), 600, (Move.WAIT, 1, Phase.RUNNING, None),
                 id="a-declared-limit-not-measured-yet-holds-the-step"),
    pytest.param(state(1, phase=Phase.ROLLED_BACK), canary(), 600,
                 (Move.WAIT, 1, Phase.ROLLED_BACK, None), id="an-ended-rollout-never-moves"),
]  # fmt: skip


@pytest.mark.parametrize(("before", "seen", "elapsed", "expected"), MOVE_CASES)
def test_moves(before: ProgressiveState, seen: Figures, elapsed: float,
               expected: tuple[Move, int, Phase, str | None]) -> None:  # fmt: skip
    decision = decide(before, SPEC, seen, T0 + elapsed)
    after = decision.state
    limit = after.breach.limit if after.breach else None
    assert (decision.move, after.step, after.phase, limit) == expected
    if decision.move is Move.ADVANCE:
        assert after.step_started_at == T0 + elapsed  # the next step's window opens now


def test_a_rollback_names_the_limit_the_figure_and_the_bound() -> None:
    decision = decide(state(1), SPEC, canary(n=120, errors=12), T0 + 5)
    assert decision.state.breach == Breach("max_error_rate", 0.1, 0.05)
    assert decision.state.reason == (
        "error rate 0.1 (12 of 120 answers 5xx) past max_error_rate 0.05 "
        "at step 2 of 3 (canary 10%)"
    )
