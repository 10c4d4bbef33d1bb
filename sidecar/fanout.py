"""Webhook fan-out: a verified delivery reaches every sidecar, not only the one the Service chose.

``SIDECAR_WEBHOOK_FANOUT=host:port`` names every sidecar at once (a Kubernetes headless Service
resolves to each pod's address). The sidecar that receives a delivery from MLflow forwards the
same body and signature headers once to every other address, marked ``X-Mlgitops-Forwarded: 1``;
each receiver verifies the signature itself and never forwards a forwarded delivery again.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import httpx

from sidecar.webhook import FORWARDED_HEADER

log = logging.getLogger(__name__)

Address = tuple[str, int]
Resolver = Callable[[str, int], list[str]]


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every IP address ``host`` resolves to (a headless Service: one per pod)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def own_addresses(bind_host: str) -> set[str]:
    """The addresses this process receives on: the bound one, or the host name's."""
    found: set[str] = set()
    try:
        if not ipaddress.ip_address(bind_host).is_unspecified:
            return {bind_host}
    except ValueError:
        found |= set(_quiet_resolve(bind_host))
    found |= set(_quiet_resolve(socket.gethostname()))
    return found


def _quiet_resolve(host: str) -> list[str]:
    try:
        return resolve_addresses(host, 0)
    except OSError:
        return []


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/webhook"


class Fanout:
    """Forwards verified deliveries to the other sidecars, in a small bounded thread pool."""

    def __init__(
        self,
        targets: Iterable[Address],
        own: Iterable[Address],
        *,
        resolver: Resolver = resolve_addresses,
        timeout: float = 5.0,
        workers: int = 4,
    ) -> None:
        self.targets = list(targets)
        self.own = set(own)
        self.resolver = resolver
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
        self._client = httpx.Client(timeout=timeout, trust_env=False)
        self._lock = threading.Lock()

    def peers(self) -> list[Address]:
        """The other sidecars' addresses now (names are resolved again each time)."""
        found: set[Address] = set()
        for host, port in self.targets:
            try:
                found |= {(address, port) for address in self.resolver(host, port)}
            except OSError as exc:
                log.warning(
                    "cannot resolve %s for the webhook fan-out: %s", host, exc,
                    extra={"event": "fanout_failed", "host": host},
                )  # fmt: skip
        return sorted(found - self.own)

    def forward(self, body: bytes, headers: Mapping[str, str], delivery_id: str) -> None:
        """Send the delivery to every peer once, in the background."""
        self._pool.submit(self._forward_all, body, dict(headers), delivery_id)

    def _forward_all(self, body: bytes, headers: dict[str, str], delivery_id: str) -> None:
        for address, port in self.peers():
            url = _url(address, port)
            try:
                response = self._client.post(
                    url, content=body, headers={**headers, FORWARDED_HEADER: "1"}
                )
            except httpx.HTTPError as exc:
                log.warning(
                    "webhook fan-out to %s failed: %s (it will poll)", url, exc,
                    extra={"event": "fanout_failed", "peer": url, "delivery_id": delivery_id},
                )  # fmt: skip
                continue
            log.info(
                "webhook forwarded to %s: %d", url, response.status_code,
                extra={"event": "fanout", "peer": url, "status": response.status_code,
                       "delivery_id": delivery_id},
            )  # fmt: skip

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
