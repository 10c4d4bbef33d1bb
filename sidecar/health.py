"""The sidecar's small HTTP endpoint: /healthz, /readyz, /metrics and POST /webhook.

stdlib ``http.server`` in a daemon thread: four routes do not need a framework.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from sidecar.loop import Sidecar
from sidecar.webhook import WebhookRejectedError, verify

log = logging.getLogger(__name__)

MAX_WEBHOOK_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: SidecarHTTPServer
    protocol_version = "HTTP/1.1"

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, title: str, description: str) -> None:
        self._json(status, {"title": title, "description": description})

    def do_GET(self) -> None:
        sidecar = self.server.sidecar
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._json(HTTPStatus.OK, {"status": "alive", **sidecar.status.snapshot()})
        elif path == "/readyz":
            ready = sidecar.status.ready()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            self._json(status, {"ready": ready, **sidecar.status.snapshot()})
        elif path == "/metrics":
            self._send(HTTPStatus.OK, sidecar.metrics.render(), CONTENT_TYPE_LATEST)
        else:
            self._error(HTTPStatus.NOT_FOUND, "404 Not Found", f"no route {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/webhook":
            self._error(HTTPStatus.NOT_FOUND, "404 Not Found", f"no route {path}")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._error(HTTPStatus.BAD_REQUEST, "400 Bad Request", "invalid Content-Length")
            return
        if length > MAX_WEBHOOK_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "413", "webhook body too large")
            return
        body = self.rfile.read(length)
        secret = self.server.webhook_secret
        if not secret:
            self._error(
                HTTPStatus.NOT_FOUND,
                "Webhook receiver disabled",
                "set SIDECAR_WEBHOOK_SECRET to the secret of the MLflow webhook to enable it",
            )
            return
        try:
            delivery = verify(
                secret, dict(self.headers.items()), body,
                now=time.time(), max_age=self.server.webhook_max_age,
            )  # fmt: skip
        except WebhookRejectedError as exc:
            log.warning("webhook rejected: %s", exc, extra={"event": "webhook_rejected"})
            self._error(HTTPStatus.UNAUTHORIZED, "Webhook rejected", str(exc))
            return
        followed = self.server.sidecar.settings.models
        relevant = not followed or delivery.model is None or delivery.model in followed
        log.info(
            "webhook %s.%s for %s", delivery.entity, delivery.action, delivery.model,
            extra={"event": "webhook", "model": delivery.model, "version": delivery.version,
                   "delivery_id": delivery.delivery_id, "relevant": relevant},
        )  # fmt: skip
        if relevant:
            self.server.sidecar.wake(delivery.model)
        self._json(HTTPStatus.OK, {"accepted": True, "check": relevant})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


class SidecarHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        sidecar: Sidecar,
        *,
        webhook_secret: str | None,
        webhook_max_age: float,
    ) -> None:
        super().__init__(address, _Handler)
        self.sidecar = sidecar
        self.webhook_secret = webhook_secret
        self.webhook_max_age = webhook_max_age


def serve_in_thread(sidecar: Sidecar) -> SidecarHTTPServer:
    """Start the endpoint on ``settings.http_host:http_port`` in a daemon thread."""
    settings = sidecar.settings
    server = SidecarHTTPServer(
        (settings.http_host, settings.http_port),
        sidecar,
        webhook_secret=settings.webhook_secret,
        webhook_max_age=settings.webhook_max_age,
    )
    thread = threading.Thread(target=server.serve_forever, name="sidecar-http", daemon=True)
    thread.start()
    return server
