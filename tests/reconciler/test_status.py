"""status: wait until every server serves the declared Production version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from reconciler.status import RolloutTimeoutError, served_version, wait_for_rollout


class Servers:
    """Fake servers: each call to fetch advances time; the version changes after a while."""

    def __init__(self, switch_after: int) -> None:
        self.calls = 0
        self.switch_after = switch_after
        self.now = 0.0

    def fetch(self, url: str) -> tuple[int, Mapping[str, Any] | None]:
        self.calls += 1
        if "down" in url:
            return 503, None
        version = "2" if self.calls > self.switch_after else "1"
        return 200, {"name": "m", "versions": [version], "platform": "onnxruntime"}

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_the_declared_version_is_served() -> None:
    servers = Servers(switch_after=3)
    seen = wait_for_rollout(
        ["http://a", "http://b"], {"m": "2"}, timeout=60, fetch=servers.fetch,
        clock=lambda: servers.now, sleep=servers.sleep,
    )  # fmt: skip
    assert sorted((o.server, o.served) for o in seen) == [("http://a", "2"), ("http://b", "2")]


def test_times_out_naming_what_each_server_serves() -> None:
    servers = Servers(switch_after=10**6)
    with pytest.raises(RolloutTimeoutError) as caught:
        wait_for_rollout(
            ["http://a", "http://down"], {"m": "2"}, timeout=5, fetch=servers.fetch,
            clock=lambda: servers.now, sleep=servers.sleep,
        )  # fmt: skip
    assert "http://a m: expected version 2, serves version 1" in str(caught.value)
    assert "http://down m: expected version 2, HTTP 503" in str(caught.value)


def test_served_version_reads_kserve_metadata() -> None:
    assert served_version({"versions": ["7", "6"]}) == "7"
    assert served_version({"version": 3}) == "3"
    assert served_version({}) is None
