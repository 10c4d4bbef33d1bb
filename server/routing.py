"""Which version answers a request: pinned, canary share (sticky by routing key), or shadow."""

from __future__ import annotations

import hashlib
import random

from contracts.rollout import RolloutMode
from server.errors import VersionNotServedError
from server.holder import Serving
from server.load import LoadedModel


def bucket(key: str) -> float:
    """A stable number in [0, 100) for a routing key: the same key, the same side."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100.0


def choose(
    serving: Serving, routing_key: str | None, pinned: str | None
) -> tuple[LoadedModel, LoadedModel | None]:
    """(the version that answers, the version that shadows it or None)."""
    candidate = serving.candidate
    if pinned:
        if pinned == serving.current.version:
            return serving.current, None
        if candidate is not None and pinned == candidate.version:
            return candidate, None
        raise VersionNotServedError(serving.current.name, pinned, serving.versions())
    rollout = serving.rollout
    if candidate is None or rollout is None:
        return serving.current, None
    if rollout.mode is RolloutMode.SHADOW:
        return serving.current, candidate
    if rollout.weight <= 0:
        return serving.current, None
    draw = bucket(routing_key) if routing_key else random.random() * 100.0
    return (candidate if draw < rollout.weight else serving.current), None
