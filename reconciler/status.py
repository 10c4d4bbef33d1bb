"""Rollout status: wait until every server reports the declared Production version of each model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from reconciler.errors import ReconcilerError
from reconciler.spec import ModelsFile
from reconciler.state import RegistryState

log = logging.getLogger(__name__)


class NotRegisteredError(ReconcilerError):
    def __init__(self, model: str, sha256: str) -> None:
        super().__init__(
            f"{model}: the declared Production version (sha256 {sha256[:12]}) is not in MLflow; "
            "run apply first"
        )


class RolloutTimeoutError(ReconcilerError):
    def __init__(self, timeout: float, pending: Mapping[tuple[str, str], str]) -> None:
        lines = "\n".join(
            f"  {server} {model}: {observed}" for (server, model), observed in pending.items()
        )
        super().__init__(
            f"after {timeout:.0f}s these servers still do not serve the declared version:\n{lines}"
        )


@dataclass(frozen=True, slots=True)
class Observation:
    server: str
    model: str
    expected: str
    served: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.served == self.expected


def declared_production(desired: ModelsFile, state: RegistryState) -> dict[str, str]:
    """model -> MLflow version number of its declared Production version."""
    expected: dict[str, str] = {}
    for model in desired.models:
        production = model.production()
        if production is None:
            continue
        actual = state.models.get(model.name)
        found = actual.by_sha256().get(production.sha256) if actual else None
        if found is None:
            raise NotRegisteredError(model.name, production.sha256)
        expected[model.name] = found.version
    return expected


def served_version(body: Mapping[str, Any]) -> str | None:
    """KServe V2 model metadata: the first of "versions", or a "version" field."""
    versions = body.get("versions")
    if isinstance(versions, list) and versions:
        return str(versions[0])
    version = body.get("version")
    return str(version) if version is not None else None


Fetch = Callable[[str], tuple[int, Mapping[str, Any] | None]]


def http_fetch(url: str) -> tuple[int, Mapping[str, Any] | None]:
    response = httpx.get(url, timeout=5.0)
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body if isinstance(body, dict) else None


def observe(server: str, model: str, expected: str, fetch: Fetch) -> Observation:
    url = f"{server.rstrip('/')}/v2/models/{model}"
    try:
        status, body = fetch(url)
    except httpx.HTTPError as exc:
        return Observation(server, model, expected, None, f"unreachable: {exc}")
    if status != 200 or body is None:
        return Observation(server, model, expected, None, f"HTTP {status}")
    served = served_version(body)
    return Observation(server, model, expected, served, f"serves version {served}")


def wait_for_rollout(
    servers: Sequence[str],
    expected: Mapping[str, str],
    *,
    timeout: float,
    interval: float = 1.0,
    fetch: Fetch = http_fetch,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Observation]:
    """Poll until each server serves each model's expected version; RolloutTimeoutError if not."""
    deadline = clock() + timeout
    pending = {
        (server, model): version for server in servers for model, version in expected.items()
    }
    done: list[Observation] = []
    last: dict[tuple[str, str], str] = {}
    while True:
        for key, version in list(pending.items()):
            seen = observe(key[0], key[1], version, fetch)
            if seen.ok:
                done.append(seen)
                del pending[key]
                log.info(
                    "server serves the declared version",
                    extra={"server": key[0], "model": key[1], "version": version},
                )
            else:
                last[key] = f"expected version {version}, {seen.detail}"
        if not pending:
            return done
        if clock() >= deadline:
            raise RolloutTimeoutError(timeout, {key: last[key] for key in pending})
        sleep(interval)
