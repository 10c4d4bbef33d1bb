"""The rollout contract: what the reconciler writes is what the sidecar and server read."""

from __future__ import annotations

import pytest

from contracts.rollout import Rollout, RolloutContractError, RolloutMode


def test_a_rollout_round_trips_through_its_tag_value() -> None:
    rollout = Rollout(candidate_version="7", mode=RolloutMode.CANARY, weight=10)
    assert rollout.to_json() == '{"candidate_version":"7","mode":"canary","weight":10}'
    assert Rollout.parse(rollout.to_json()) == rollout


def test_an_integer_candidate_version_is_read_as_its_string() -> None:
    parsed = Rollout.parse('{"candidate_version": 3, "mode": "shadow", "weight": 0}')
    assert parsed == Rollout(candidate_version="3", mode=RolloutMode.SHADOW, weight=0.0)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"mode": "canary", "weight": 1}', "candidate_version missing"),
        ('{"candidate_version": true, "mode": "canary", "weight": 1}', "candidate_version"),
        ('{"candidate_version": "x1", "mode": "canary", "weight": 1}', "not a number"),
        ('{"candidate_version": "1", "mode": "blue", "weight": 1}', "mode is not one of"),
        ('{"candidate_version": "1", "mode": "canary", "weight": 101}', "from 0 to 100"),
        ('{"candidate_version": "1", "mode": "canary", "weight": "5"}', "from 0 to 100"),
        ('{"candidate_version": "1", "mode": "canary"}', "from 0 to 100"),
        ('{"candidate_version": "1", "mode": "canary", "weight": 1, "x": 1}', "unknown fields"),
    ],
)
def test_a_value_that_breaks_a_rule_is_refused_naming_it(text: str, rule: str) -> None:
    with pytest.raises(RolloutContractError, match=rule):
        Rollout.parse(text)
