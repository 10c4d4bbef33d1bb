"""The sidecar's small HTTP endpoint: /healthz, /readyz, /metrics and POST /webhook.

A WSGI app under waitress: waitress frames HTTP (it reads every declared body before the app
answers, refuses a body over the limit with 413 and closes), its channels time out, and a fixed
pool of threads with a connection limit bounds what a flood of clients can hold.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.fanout import Fanout, own_addresses
from sidecar.loop import Sidecar
from sidecar.webhook import (
    FORWARDED_HEADER,
    FORWARDED_HEADERS,
    DeliveryLog,
    WebhookRejectedError,
    verify,
)

log = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 1 << 20
THREADS = 4
CONNECTION_LIMIT = 64
CHANNEL_TIMEOUT = 15
"""Seconds a connection may stay silent (mid-request included) before waitress closes it."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _status_line(status: HTTPStatus) -> str:
    return f"{status.value} {status.phrase}"


def _headers_of(environ: dict[str, Any]) -> dict[str, str]:
    """Request headers by their usual names (``X-Mlflow-Signature``) from a WSGI environ."""
    headers = {
        key[5:].replace("_", "-").title(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = str(environ["CONTENT_TYPE"])
    return headers


class Endpoint:
    """The WSGI application; collaborators passed in, nothing global."""

    def __init__(
        self,
        sidecar: Sidecar,
        *,
        webhook_secret: str | None,
        webhook_max_age: float,
        fanout: Fanout | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sidecar = sidecar
        self.webhook_secret = webhook_secret
        self.webhook_max_age = webhook_max_age
        self.fanout = fanout
        self.clock = clock
        self.deliveries = DeliveryLog(webhook_max_age)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method in {"GET", "HEAD"} and path in {"/healthz", "/readyz", "/metrics"}:
            status, body, content_type = self._probe(path)
        elif method == "POST" and path == "/webhook":
            status, body, content_type = self._webhook(environ)
        elif path in {"/healthz", "/readyz", "/metrics", "/webhook"}:
            status, body, content_type = _error(
                HTTPStatus.METHOD_NOT_ALLOWED, "405 Method Not Allowed", f"{method} {path}"
            )
        else:
            status, body, content_type = _error(
                HTTPStatus.NOT_FOUND, "404 Not Found", "no such route"
            )
        start_response(
            _status_line(status),
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [b""] if method == "HEAD" else [body]

    def _probe(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        status = self.sidecar.status
        if path == "/healthz":
            return _json(HTTPStatus.OK, {"status": "alive", **status.snapshot()})
        if path == "/readyz":
            ready = status.ready()
            code = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return _json(code, {"ready": ready, **status.snapshot()})
        return HTTPStatus.OK, self.sidecar.metrics.render(), CONTENT_TYPE_LATEST

    def _webhook(self, environ: dict[str, Any]) -> tuple[HTTPStatus, bytes, str]:
        counter = self.sidecar.metrics.webhook_deliveries
        body = environ["wsgi.input"].read(MAX_WEBHOOK_BODY + 1)
        if len(body) > MAX_WEBHOOK_BODY:  # waitress refuses it first; never trust one layer
            return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "413", "webhook body too large")
        if not self.webhook_secret:
            return _error(
                HTTPStatus.NOT_FOUND,
                "Webhook receiver disabled",
                "set SIDECAR_WEBHOOK_SECRET to the secret of the MLflow webhook to enable it",
            )
        headers = _headers_of(environ)
        now = self.clock()
        try:
            delivery = verify(
                self.webhook_secret, headers, body, now=now, max_age=self.webhook_max_age
            )
        except WebhookRejectedError as exc:
            counter.labels("rejected").inc()
            log.warning("webhook rejected: %s", exc, extra={"event": "webhook_rejected"})
            return _error(HTTPStatus(exc.status), "Webhook rejected", str(exc))
        if not self.deliveries.first_time(delivery.delivery_id, now):
            counter.labels("duplicate").inc()
            log.warning(
                "webhook delivery %s already received: refused", delivery.delivery_id,
                extra={"event": "webhook_rejected", "delivery_id": delivery.delivery_id},
            )  # fmt: skip
            return _error(HTTPStatus.CONFLICT, "Duplicate delivery", "this delivery id was seen")
        forwarded = headers.get(FORWARDED_HEADER.title()) == "1"
        counter.labels("forwarded" if forwarded else "accepted").inc()
        if self.fanout is not None and not forwarded:
            carried = {n: headers[n.title()] for n in FORWARDED_HEADERS if n.title() in headers}
            self.fanout.forward(body, carried, delivery.delivery_id)
        followed = self.sidecar.settings.models
        relevant = not followed or delivery.model is None or delivery.model in followed
        log.info(
            "webhook %s.%s for %s", delivery.entity, delivery.action, delivery.model,
            extra={"event": "webhook", "model": delivery.model, "version": delivery.version,
                   "delivery_id": delivery.delivery_id, "relevant": relevant,
                   "forwarded": forwarded},
        )  # fmt: skip
        if relevant:
            self.sidecar.wake(delivery.model)
        return _json(HTTPStatus.OK, {"accepted": True, "check": relevant})


def _json(status: HTTPStatus, payload: dict[str, Any]) -> tuple[HTTPStatus, bytes, str]:
    return status, json.dumps(payload).encode(), "application/json"


def _error(status: HTTPStatus, title: str, description: str) -> tuple[HTTPStatus, bytes, str]:
    return _json(status, {"title": title, "description": description})


@dataclass
class RunningEndpoint:
    """The endpoint serving in a daemon thread; :meth:`shutdown` stops it."""

    server: Any
    thread: threading.Thread
    endpoint: Endpoint

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def shutdown(self) -> None:
        self.server.task_dispatcher.shutdown()
        self.server.close()
        if self.endpoint.fanout is not None:
            self.endpoint.fanout.close()


def serve_in_thread(sidecar: Sidecar, *, timeout: float = CHANNEL_TIMEOUT) -> RunningEndpoint:
    """Start the endpoint on ``settings.http_host:http_port`` in a daemon thread.

    Raises:
        OSError: the address cannot be bound.
    """
    from waitress.server import create_server  # type: ignore[import-untyped]

    settings = sidecar.settings
    fanout = None
    if settings.fanout_targets:
        own = {(address, settings.http_port) for address in own_addresses(settings.http_host)}
        fanout = Fanout(settings.fanout_targets, own)
    endpoint = Endpoint(
        sidecar,
        webhook_secret=settings.webhook_secret,
        webhook_max_age=settings.webhook_max_age,
        fanout=fanout,
    )
    server = create_server(
        endpoint,
        host=settings.http_host,
        port=settings.http_port,
        threads=THREADS,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=timeout,
        cleanup_interval=max(timeout / 2, 0.5),
        max_request_body_size=MAX_WEBHOOK_BODY,
        max_request_header_size=32 * 1024,
        expose_tracebacks=False,
        ident="mlgitops-sidecar",
    )
    thread = threading.Thread(target=server.run, name="sidecar-http", daemon=True)
    thread.start()
    return RunningEndpoint(server=server, thread=thread, endpoint=endpoint)
