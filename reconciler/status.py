"""Rollout status: wait until every server pod serves the declared version of each model.

A ``--server`` URL whose host resolves to several addresses (a Kubernetes headless Service)
stands for every pod behind it: each address is asked, and the names are resolved again on
every round (pods come and go during a rolling update). A pod that does not serve the declared
version is asked why: its ``GET /models`` ``lastError``, shown masked, escaped and bounded.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from contracts.redact import mask_credentials
from contracts.registry import Stage
from reconciler import progressive, render
from reconciler.errors import ReconcilerError
from reconciler.progressive import Phase
from reconciler.spec import ModelsFile, ModelSpec
from reconciler.state import ActualModel, RegistryState

log = logging.getLogger(__name__)


class NotRegisteredError(ReconcilerError):
    def __init__(self, model: str, selector: str, sha256: str) -> None:
        super().__init__(
            f"{model}: the version models.yaml declares for {selector} (sha256 {sha256[:12]}) "
            "is not in MLflow; run apply first"
        )


class NothingToCheckError(ReconcilerError):
    def __init__(self, selector: str) -> None:
        super().__init__(
            f"models.yaml declares no version for {selector}, so there is nothing to wait for. "
            "If the sidecars follow an alias, pass --alias NAME (the sidecar's --alias)."
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


@dataclass(frozen=True, slots=True)
class Pod:
    """One server to ask: ``url`` connects to an address; ``host`` is the name it was given."""

    url: str
    host: str
    label: str
    """For people: ``http://server:8000 (pod 10.0.0.7)``, or the URL when it is one address."""


def selector_text(alias: str | None) -> str:
    return f"alias {alias}" if alias else f"stage {Stage.PRODUCTION.value}"


def declared_versions(
    desired: ModelsFile, state: RegistryState, *, alias: str | None = None
) -> dict[str, str]:
    """model -> MLflow version number the servers should serve: the declared Production
    version, or (``alias``) the version models.yaml gives that alias. While a progressive
    rollout of it runs (or after it was rolled back), the stable version it started beside.

    Raises:
        NotRegisteredError: a declared version is not registered yet.
        NothingToCheckError: no model declares one (a check that could never fail).
    """
    expected: dict[str, str] = {}
    selector = selector_text(alias)
    for model in desired.models:
        if alias is None:
            wanted = model.production()
        else:
            wanted = next((v for v in model.versions if alias in v.aliases), None)
        if wanted is None:
            continue
        actual = state.models.get(model.name)
        held = _held_by_rollout(model, actual, wanted.sha256)
        if held is not None:
            expected[model.name] = held
            continue
        found = actual.by_sha256().get(wanted.sha256) if actual else None
        if found is None:
            raise NotRegisteredError(model.name, selector, wanted.sha256)
        expected[model.name] = found.version
    if not expected:
        raise NothingToCheckError(selector)
    return expected


def _held_by_rollout(model: ModelSpec, actual: ActualModel | None, sha256: str) -> str | None:
    """The stable version of a progressive rollout of ``sha256`` not promoted (yet)."""
    if model.progressive is None or actual is None:
        return None
    found = progressive.read(model.name, actual.tags)
    if found is None or found.candidate_sha256 != sha256 or found.phase is Phase.PROMOTED:
        return None
    return found.stable_version


def rollout_lines(desired: ModelsFile, state: RegistryState) -> list[str]:
    """One line per model with a progressive rollout: where it stands, or how it ended."""
    lines = []
    for model in desired.models:
        actual = state.models.get(model.name)
        found = progressive.read(model.name, actual.tags) if actual else None
        if model.progressive is not None and found is not None:
            lines.append(f"{model.name}: progressive rollout {found.describe()}")
    return lines


def served_version(body: Mapping[str, Any]) -> str | None:
    """KServe V2 model metadata: the first of "versions", or a "version" field."""
    versions = body.get("versions")
    if isinstance(versions, list) and versions:
        return str(versions[0])
    version = body.get("version")
    return str(version) if version is not None else None


Resolve = Callable[[str, int], list[str]]


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, sorted; an IP is itself.

    IPv4 addresses when there are any, else IPv6: a dual-stack name lists each pod once per
    family, and a server bound to 0.0.0.0 does not answer on its IPv6 address.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            found = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except socket.gaierror:
            if family is socket.AF_INET6:
                raise
            continue
        if found:
            return sorted({str(info[4][0]) for info in found})
    return []


def pods(server: str, resolve: Resolve = resolve_addresses) -> list[Pod]:
    """The pods behind one ``--server`` URL; an unresolvable name raises OSError."""
    parts = urlsplit(server.rstrip("/"))
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    shown = mask_credentials(server.rstrip("/"))
    if addresses == [host]:
        return [Pod(server.rstrip("/"), host, shown)]
    found = []
    for address in addresses:
        netloc = f"[{address}]" if ":" in address else address
        netloc += f":{parts.port}" if parts.port else ""
        url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        found.append(Pod(url, host, f"{shown} (pod {address})"))
    return found


Fetch = Callable[[Pod, str], tuple[int, Mapping[str, Any] | None]]


def http_fetcher(token: str | None, timeout: float = 5.0) -> Fetch:
    """GET a model's V2 metadata from one pod, with the bearer token when there is one."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def fetch(pod: Pod, path: str) -> tuple[int, Mapping[str, Any] | None]:
        # Connect to the pod's address; Host and TLS name stay those of the URL given.
        extensions = {"sni_hostname": pod.host} if pod.url.startswith("https") else None
        with httpx.Client(timeout=timeout) as client:
            request = client.build_request(
                "GET",
                f"{pod.url}{path}",
                headers={**headers, "Host": _host_header(pod)},
                extensions=extensions,
            )
            response = client.send(request)
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body if isinstance(body, dict) else None

    return fetch


def _host_header(pod: Pod) -> str:
    port = urlsplit(pod.url).port
    return f"{pod.host}:{port}" if port else pod.host


REASON_LIMIT = 300
"""Characters shown of a server's own error (its text, not ours: masked and escaped too)."""


def server_reason(body: Mapping[str, Any] | None, model: str) -> str | None:
    """The ``lastError`` of ``model`` in a server's ``GET /models`` answer, fit to print."""
    entries = body.get("models") if body is not None else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == model:
            error = entry.get("lastError")
            if isinstance(error, str) and error.strip():
                return render.untrusted(error, REASON_LIMIT)
    return None


def _why(pod: Pod, model: str, fetch: Fetch) -> str:
    """`` (the server's last error: ...)`` when the pod says why it does not serve; else ""."""
    try:
        status, body = fetch(pod, "/models")
    except httpx.HTTPError:
        return ""
    reason = server_reason(body, model) if status == 200 else None
    return f" (the server's last error: {reason})" if reason else ""


def observe(pod: Pod, model: str, expected: str, fetch: Fetch) -> Observation:
    try:
        status, body = fetch(pod, f"/v2/models/{model}")
    except httpx.HTTPError as exc:
        detail = mask_credentials(f"unreachable: {type(exc).__name__}: {exc}")
        return Observation(pod.label, model, expected, None, detail)
    if status == 401:
        detail = "HTTP 401 (set RECONCILER_SERVER_TOKEN to the servers' SERVER_AUTH_TOKEN)"
        return Observation(pod.label, model, expected, None, detail)
    if status != 200 or body is None:
        detail = f"HTTP {status}{_why(pod, model, fetch)}"
        return Observation(pod.label, model, expected, None, detail)
    served = served_version(body)
    detail = f"serves version {served}"
    if served != expected:
        detail += _why(pod, model, fetch)
    return Observation(pod.label, model, expected, served, detail)


def wait_for_rollout(
    servers: Sequence[str],
    expected: Mapping[str, str],
    *,
    timeout: float,
    interval: float = 1.0,
    fetch: Fetch | None = None,
    resolve: Resolve = resolve_addresses,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Observation]:
    """Poll until every pod of every server serves each model's expected version.

    Each round resolves the servers' names again; it is done when every pod found in that
    round has served every expected version. RolloutTimeoutError names what is still pending.
    """
    fetch = fetch or http_fetcher(None)
    deadline = clock() + timeout
    confirmed: dict[tuple[str, str], Observation] = {}
    while True:
        pending: dict[tuple[str, str], str] = {}
        current: set[tuple[str, str]] = set()
        for server in servers:
            try:
                found = pods(server, resolve)
            except OSError as exc:
                for model in expected:
                    pending[(mask_credentials(server), model)] = f"cannot resolve: {exc}"
                continue
            if not found:
                for model in expected:
                    pending[(mask_credentials(server), model)] = "resolves to no address"
            for pod in found:
                for model, version in expected.items():
                    key = (pod.label, model)
                    current.add(key)
                    if key in confirmed:
                        continue
                    seen = observe(pod, model, version, fetch)
                    if seen.ok:
                        confirmed[key] = seen
                        log.info(
                            "server serves the declared version",
                            extra={"server": pod.label, "model": model, "version": version},
                        )
                    else:
                        pending[key] = f"expected version {version}, {seen.detail}"
        if not pending:
            return [confirmed[key] for key in sorted(current)]
        if clock() >= deadline:
            raise RolloutTimeoutError(timeout, pending)
        sleep(interval)
