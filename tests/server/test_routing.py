"""Canary/shadow routing (server.routing) and the manifest's rollout (server.holder)."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest

from contracts.rollout import Rollout, RolloutMode
from server.errors import VersionNotServedError
from server.holder import Serving
from server.load import LoadedModel
from server.routing import bucket, choose


class FakeModel:
    def __init__(self, version: str) -> None:
        self.name = "m"
        self.version = version


def _serving(rollout: Rollout | None, candidate: bool = True) -> Serving:
    current = cast(LoadedModel, FakeModel("1"))
    other = cast(LoadedModel, FakeModel("2")) if candidate else None
    return Serving(current=current, candidate=other, rollout=rollout)


def test_no_candidate_means_current() -> None:
    serving = _serving(None, candidate=False)
    assert choose(serving, "key", None) == (serving.current, None)


def test_pin_selects_and_unknown_pin_is_refused() -> None:
    serving = _serving(Rollout("2", RolloutMode.CANARY, 0))
    assert choose(serving, None, "2")[0] is serving.candidate
    assert choose(serving, None, "1")[0] is serving.current
    with pytest.raises(VersionNotServedError):
        choose(serving, None, "3")


def test_shadow_answers_with_current_and_shadows_candidate() -> None:
    serving = _serving(Rollout("2", RolloutMode.SHADOW, 50))
    assert choose(serving, None, None) == (serving.current, serving.candidate)


@pytest.mark.parametrize("weight", [0.0, 10.0, 50.0, 100.0])
def test_canary_share_by_key_is_sticky_and_close_to_weight(weight: float) -> None:
    serving = _serving(Rollout("2", RolloutMode.CANARY, weight))
    keys = [f"user-{i}" for i in range(5000)]
    picks = [choose(serving, key, None)[0].version for key in keys]
    assert picks == [choose(serving, key, None)[0].version for key in keys]  # sticky
    share = picks.count("2") / len(keys) * 100
    assert abs(share - weight) < 3


def test_canary_without_key_is_random_near_weight() -> None:
    random.seed(7)
    serving = _serving(Rollout("2", RolloutMode.CANARY, 10))
    picks: list[Any] = [choose(serving, None, None)[0].version for _ in range(20000)]
    assert 8.5 < picks.count("2") / 200 < 11.5


def test_bucket_is_stable() -> None:
    assert bucket("abc") == bucket("abc")
    assert 0 <= bucket("abc") < 100
