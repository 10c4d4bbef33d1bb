"""The Falcon (ASGI) application: ``create_app`` wires collaborators, ``get_app`` reads settings.

gunicorn calls ``server.app:get_app()`` in each worker, after the fork.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import falcon.asgi

from server.errors import add_error_serializer, error_body, is_v2
from server.holder import ModelTable
from server.load import LoadOptions
from server.metrics import MetricsFlusher
from server.pipeline import Kind, Pipeline
from server.resources import GetResource, MethodNotAllowedAuth, PostResource, UnknownPath
from server.settings import ServerSettings
from server.sync import VolumeSync
from server.watcher import VolumeWatcher

log = logging.getLogger(__name__)


class ServerApp:
    """The ASGI app gunicorn serves: the Falcon app, the pipeline the lean worker hands
    ``/predict`` to, and the threads that run while it serves: ``start`` and ``stop``, called
    by the lean worker, or by Falcon's ASGI lifespan (uvicorn, tests)."""

    def __init__(
        self, falcon_app: falcon.asgi.App[Any, Any], pipeline: Pipeline, settings: ServerSettings
    ) -> None:
        self.falcon = falcon_app
        self.pipeline = pipeline
        self.settings = settings
        self.background: list[VolumeWatcher | MetricsFlusher] = []
        falcon_app.add_middleware(self)  # process_startup / process_shutdown below

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        version = scope.get("http_version", "1.1") if scope["type"] == "http" else "1.1"
        if version not in ("1.0", "1.1", "2"):  # uvicorn hands HTTP/0.9 on; Falcon: a 500
            description = f"malformed HTTP request: HTTP/{version} is not HTTP/1.x"
            body = error_body(is_v2(scope["path"]), "Bad Request", description)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"),
            ]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.falcon(scope, receive, send)

    def start(self) -> None:
        for thread in self.background:
            thread.start()

    def stop(self) -> None:
        for thread in reversed(self.background):
            thread.stop()

    async def process_startup(self, scope: object, event: object) -> None:
        self.start()

    async def process_shutdown(self, scope: object, event: object) -> None:
        self.stop()


ROUTES = {
    Kind.PREDICT: ("/predict", "/models/{name}/predict"),
    Kind.MODELS: ("/models",),
    Kind.INFER: ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"),
    Kind.MODEL: ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"),
    Kind.MODEL_READY: ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"),
    Kind.SERVER: ("/v2",),
    Kind.LIVE: ("/v2/health/live",),
    Kind.READY: ("/v2/health/ready",),
    Kind.METRICS: ("/metrics",),
}


def create_app(table: ModelTable, settings: ServerSettings) -> ServerApp:
    """The app serving ``table``; nothing here reads the environment or the volume."""
    app = falcon.asgi.App(middleware=[MethodNotAllowedAuth()])
    pipeline = Pipeline(table, settings)
    for kind, paths in ROUTES.items():
        post = kind in (Kind.PREDICT, Kind.INFER)
        resource = (PostResource if post else GetResource)(pipeline, kind)
        for path in paths:
            app.add_route(path, resource)
    app.add_sink(UnknownPath(pipeline, Kind.UNKNOWN))
    add_error_serializer(app)
    return ServerApp(app, pipeline, settings)


BOOT_WAIT_SECONDS = 40.0
"""How long a booting worker waits for the first load of the volume: below gunicorn's timeout
(60 s), so that slow or hanging loads never get the booting worker killed (and rebooted for
ever); what is not loaded by then goes on loading in the background."""


def _first_sync(watcher: VolumeWatcher) -> None:
    """Load what the volume holds before serving (the watcher reports only changes)."""
    thread = threading.Thread(target=watcher.sync_now, name="first-sync", daemon=True)
    thread.start()
    thread.join(BOOT_WAIT_SECONDS)
    if thread.is_alive():
        log.warning(
            "models still loading after %.0fs; serving what is loaded, the rest follows",
            BOOT_WAIT_SECONDS,
        )


def get_app() -> ServerApp:
    """Read ``ServerSettings``, load what the volume holds, watch it, build the app."""
    settings = ServerSettings()  # type: ignore[call-arg,unused-ignore]
    table = ModelTable(settings.default_model, settings.required)
    load = LoadOptions(
        intra_op_threads=settings.intra_op_threads,
        inline_max_us=settings.inline_max_us,
        timeout_s=settings.load_timeout_seconds,
    )
    sync = VolumeSync(
        settings.volume, table, load, allow_schema_change=settings.allow_schema_change
    )
    watcher = VolumeWatcher(
        settings.volume,
        sync.sync,
        force_polling=settings.force_polling,
        poll_delay_ms=settings.poll_delay_ms,
        rescan_seconds=settings.rescan_seconds,
    )
    _first_sync(watcher)
    app = create_app(table, settings)
    app.background += [watcher, MetricsFlusher()]
    log.info("serving %s: %s", settings.volume, ", ".join(table.names()) or "nothing yet")
    if app.pipeline.token is None:
        log.warning("SERVER_AUTH_TOKEN is not set: the inference routes take no authentication")
    return app
