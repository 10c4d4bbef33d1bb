"""The progressive state tag: one encoder, one strict parser, the lines people read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.rollout import Rollout, RolloutMode
from reconciler.progressive import (
    PROGRESSIVE_TAG,
    Breach,
    Phase,
    ProgressiveState,
    ProgressiveStateError,
    Step,
    read,
    steps_of,
    steps_text,
)

SHA = "c" * 64
STATE = ProgressiveState(
    candidate_version="3",
    candidate_sha256=SHA,
    stable_version="2",
    steps=steps_of(["shadow", 10, 50]),
    step=1,
    step_started_at=1_800_000_000.25,
    phase=Phase.RUNNING,
)


def test_a_state_reads_back_as_itself_and_names_its_step() -> None:
    text = STATE.to_json()
    assert ProgressiveState.parse("m", text) == STATE
    assert read("m", {PROGRESSIVE_TAG: text}) == STATE
    assert read("m", {}) is None
    assert STATE.rollout() == Rollout("3", RolloutMode.CANARY, 10.0)
    assert STATE.position() == "step 2 of 3 (canary 10%)"
    assert (
        STATE.describe() == "v2 -> v3: running, step 2 of 3 (canary 10%) since 2027-01-15 08:00:00Z"
    )
    assert steps_text(STATE.steps) == "shadow, 10%, 50%"
    shadow = STATE.restarted(0.0)
    assert shadow.step_started_at == 0.0
    assert ProgressiveState.parse("m", STATE.advanced(5.0).to_json()).rollout().weight == 50.0


def test_an_ended_state_keeps_its_breach() -> None:
    ended = STATE.ended(Phase.ROLLED_BACK, "error rate 0.1 past max_error_rate 0.01",
                        Breach("max_error_rate", 0.1, 0.01))  # fmt: skip
    assert ProgressiveState.parse("m", ended.to_json()) == ended
    assert ended.describe() == (
        "v2 -> v3: rolled back at step 2 of 3 (canary 10%): error rate 0.1 past max_error_rate 0.01"
    )
    assert Breach("max_error_rate", 0.1, 0.01).text() == "max_error_rate 0.1 > 0.01"
    assert STATE.ended(Phase.PROMOTED, "ok").describe() == "v2 -> v3: promoted after 3 step(s)"


def test_steps_of_models_yaml() -> None:
    assert steps_of(["shadow", 25]) == (
        Step(RolloutMode.SHADOW, 100.0), Step(RolloutMode.CANARY, 25.0),
    )  # fmt: skip
    assert [step.label() for step in steps_of(["shadow", 25])] == ["shadow", "canary 25%"]


def _with(**changes: Any) -> str:
    data = STATE.to_dict()
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        (_with(extra=1), "unknown fields ['extra']"),
        (_with(format_version=2), "format_version 2 is not 1"),
        (_with(candidate_version=...), "'candidate_version'"),
        (_with(candidate_version="v3"), "candidate_version 'v3' is not a version number"),
        (_with(stable_version=2), "stable_version is not a string"),
        (_with(steps="shadow"), "steps is not a list"),
        (_with(steps=[]), "a rollout has at least one step"),
        (_with(steps=[0]), "step 0 is neither a share from 1 to 100 nor 'shadow'"),
        (_with(steps=[True]), "step True is neither"),
        (_with(step=3), "step 3 is not an index of 3 steps"),
        (_with(step=1.0), "step is not an integer"),
        (_with(step_started_at="now"), "step_started_at is not a finite number"),
        (_with(phase="paused"), "'paused' is not a valid Phase"),
        (_with(breach={"limit": "x"}), "breach is not {limit, value, bound}"),
    ],
)
def test_a_state_breaking_a_rule_is_refused_naming_it(text: str, rule: str) -> None:
    with pytest.raises(ProgressiveStateError, match="delete the tag") as caught:
        ProgressiveState.parse("m", text)
    assert rule in caught.value.rule
