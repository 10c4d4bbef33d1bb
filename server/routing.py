"""Which version answers a request: pinned, canary share (sticky by routing key), or shadow."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from contracts.rollout import RolloutMode
from server.errors import VersionNotServedError
from server.holder import Serving
from server.load import LoadedModel

ROUTING_KEY_HEADER = "X-Routing-Key"
VERSION_HEADER = "X-Model-Version"

Header = Callable[[str], str | None]
"""Looks a request header up by name (case-insensitive), None when absent."""


def bucket(key: str) -> float:
    """A stable number in [0, 100) for a routing key: the same key, the same side."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100.0


def route(
    serving: Serving, header: Header, pinned: str | None = None
) -> tuple[LoadedModel, LoadedModel | None]:
    """(the version that answers, the version that shadows it or None) for a request;
    ``pinned`` (a version in the URL) wins over the version header."""
    pinned = pinned or header(VERSION_HEADER)
    if serving.candidate is None and (not pinned or pinned == serving.current.version):
        return serving.current, None  # the common case: no more header lookups
    return choose(serving, header(ROUTING_KEY_HEADER), pinned)


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
