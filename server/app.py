"""The Falcon (ASGI) application: ``create_app`` wires collaborators, ``get_app`` reads settings.

gunicorn calls ``server.app:get_app()`` in each worker, after the fork.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

import falcon
import falcon.asgi
import falcon.media
import orjson

from server.auth import BearerToken, BearerTokenAuth
from server.errors import add_error_handlers
from server.holder import ModelTable
from server.load import LoadOptions
from server.metrics import MetricsFlusher
from server.predict import Predictor, Shadows
from server.resources import (
    InferResource,
    LiveResource,
    MetricsResource,
    ModelResource,
    ModelsResource,
    PredictResource,
    ReadyResource,
    ServerMetadataResource,
)
from server.settings import ServerSettings
from server.sync import SyncOptions, VolumeSync
from server.v2 import JSON_OPTIONS
from server.watcher import VolumeWatcher

log = logging.getLogger(__name__)


class ServerApp:
    """The ASGI app gunicorn serves: the Falcon app, plus the parts the fast worker calls."""

    def __init__(
        self,
        falcon_app: falcon.asgi.App[Any, Any],
        predictor: Predictor,
        token: BearerToken | None,
        retry_after: int,
        body_timeout: float = 30.0,
    ) -> None:
        self.body_timeout = body_timeout
        self.falcon = falcon_app
        self.predictor = predictor
        self.token = token
        self.retry_after = retry_after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.falcon(scope, receive, send)


def create_app(table: ModelTable, settings: ServerSettings) -> ServerApp:
    """The app serving ``table``; nothing here reads the environment or the volume."""
    middleware: list[Any] = []
    token = None
    if settings.auth_token is not None:  # never empty (ServerSettings refuses that)
        token = BearerToken(settings.auth_token.get_secret_value())
        middleware.append(BearerTokenAuth(token))
    app = falcon.asgi.App(middleware=middleware)
    json_handler = falcon.media.JSONHandler(
        dumps=partial(orjson.dumps, option=JSON_OPTIONS), loads=orjson.loads
    )
    app.req_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json_handler})
    app.resp_options.media_handlers = falcon.media.Handlers({falcon.MEDIA_JSON: json_handler})

    shadows = Shadows(settings.shadow_tolerance)
    predictor = Predictor(table, settings.max_body_bytes, shadows)
    predict = PredictResource(predictor)
    app.add_route("/predict", predict)
    app.add_route("/models/{name}/predict", predict)
    app.add_route("/models", ModelsResource(table))
    infer = InferResource(table, settings.max_body_bytes, shadows)
    metadata = ModelResource(table)
    model_ready = ModelResource(table, ready=True)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.add_route(f"{prefix}/infer", infer)
        app.add_route(prefix, metadata)
        app.add_route(f"{prefix}/ready", model_ready)
    app.add_route("/v2", ServerMetadataResource())
    app.add_route("/v2/health/live", LiveResource())
    app.add_route("/v2/health/ready", ReadyResource(table, settings.retry_after_seconds))
    app.add_route("/metrics", MetricsResource(settings.metrics_port))
    add_error_handlers(app, settings.retry_after_seconds)
    return ServerApp(
        app, predictor, token, settings.retry_after_seconds, settings.body_timeout_seconds
    )


class BackgroundThreads:
    """Falcon middleware: the volume watcher and metrics flusher run with the ASGI lifespan."""

    def __init__(self, watcher: VolumeWatcher, flusher: MetricsFlusher) -> None:
        self._watcher = watcher
        self._flusher = flusher

    async def process_startup(self, scope: object, event: object) -> None:
        self._watcher.start()
        self._flusher.start()

    async def process_shutdown(self, scope: object, event: object) -> None:
        self._watcher.stop()
        self._flusher.stop()


BOOT_WAIT_SECONDS = 40.0
"""How long a booting worker waits for the first load of the volume: below gunicorn's timeout
(60 s), so that slow or hanging loads never get the booting worker killed (and rebooted for
ever); what is not loaded by then goes on loading in the background."""


def _first_sync(sync: VolumeSync, settings: ServerSettings) -> None:
    """Load what the volume holds before serving (the watcher reports only changes)."""

    def first() -> None:
        try:
            sync.sync()
        except Exception:
            log.exception("first sync of %s failed; the watcher retries", settings.volume)

    thread = threading.Thread(target=first, name="first-sync", daemon=True)
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
    sync = VolumeSync(
        settings.volume,
        table,
        SyncOptions(
            load=LoadOptions(
                intra_op_threads=settings.intra_op_threads,
                batch_max_rows=settings.batch_max_rows,
                batch_window_us=settings.batch_window_us,
                inline_max_us=settings.inline_max_us,
                timeout_s=settings.load_timeout_seconds,
            ),
            allow_schema_change=settings.allow_schema_change,
        ),
    )
    _first_sync(sync, settings)
    watcher = VolumeWatcher(
        settings.volume,
        sync.sync,
        force_polling=settings.force_polling,
        poll_delay_ms=settings.poll_delay_ms,
        rescan_seconds=settings.rescan_seconds,
    )
    app = create_app(table, settings)
    app.falcon.add_middleware(BackgroundThreads(watcher, MetricsFlusher()))
    log.info("serving %s: %s", settings.volume, ", ".join(table.names()) or "nothing yet")
    if app.token is None:
        log.warning("SERVER_AUTH_TOKEN is not set: the inference routes take no authentication")
    return app
