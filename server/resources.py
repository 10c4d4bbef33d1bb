"""HTTP resources: /predict, the KServe V2 subset, health, metrics, model status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import falcon
import falcon.asgi

from server import v2
from server.batcher import Array
from server.errors import ServerError, VersionNotServedError
from server.holder import ModelTable, Serving
from server.load import LoadedModel
from server.metrics import record_failure, render
from server.predict import (
    INLINE_MAX_BODY_BYTES,
    VERSION_HEADER,
    Predictor,
    Shadows,
    check_body,
    route,
)


async def read_body(req: falcon.asgi.Request, max_bytes: int) -> bytes:
    """The raw body, read up to one byte past the limit (chunked bodies have no length)."""
    return await req.stream.read(max_bytes + 1)


class PredictResource:
    """``POST /predict`` (the default model) and ``POST /models/{name}/predict``."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str | None = None
    ) -> None:
        predictor = self._predictor
        predictor.check(name, req.content_type, req.content_length)
        raw = await read_body(req, predictor.max_body_bytes)
        answer = await predictor.predict(name, raw, req.get_header)
        resp.media = answer.body
        resp.set_header(VERSION_HEADER, answer.model.version)


class InferResource:
    """``POST /v2/models/{name}[/versions/{version}]/infer`` (Open Inference Protocol), JSON or
    with the binary tensor data extension; a large body is decoded and run in a thread."""

    def __init__(self, table: ModelTable, max_body_bytes: int, shadows: Shadows) -> None:
        self._table = table
        self._max_body_bytes = max_body_bytes
        self._shadows = shadows

    async def on_post(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        name: str,
        version: str | None = None,
    ) -> None:
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            serving = self._table.get(name).require()
            header_length = req.get_header(v2.HEADER_LENGTH)
            v2.check_media_type(req.content_type, header_length)
            check_body("application/json", req.content_length, self._max_body_bytes)
            raw = await read_body(req, self._max_body_bytes)
            large = len(raw) > INLINE_MAX_BODY_BYTES
            pinned = version if version is not None else req.get_header(VERSION_HEADER)
            model, shadow = route(serving, lambda key: pinned if key == VERSION_HEADER else (
                req.get_header(key)
            ))  # fmt: skip

            def decode() -> tuple[v2.InferRequest, dict[str, Array], list[v2.OutputChoice]]:
                assert model is not None
                request = v2.parse_request(raw, header_length, self._max_body_bytes)
                return (
                    request,
                    v2.feeds(request, model.inputs),
                    v2.choose_outputs(request, model.outputs),
                )

            request, feeds, chosen = await asyncio.to_thread(decode) if large else decode()
            if large:
                outputs = await asyncio.to_thread(model.run_feeds, feeds)
            else:
                outputs = await model.infer_feeds(feeds)
            data, headers = v2.encode_answer(
                model.name, model.version, outputs, chosen, request.body.get("id")
            )
        except ServerError as exc:
            if model is not None:
                model.metrics.request(exc.status, None)
            else:
                record_failure(self._table.label(name), exc.status)
            raise
        resp.data = data
        resp.content_type = headers.pop("Content-Type")
        resp.set_headers(headers)
        resp.set_header(VERSION_HEADER, model.version)
        model.metrics.request(200, time.perf_counter() - started)
        if shadow is not None:
            self._shadows.submit(shadow, feeds, outputs)


def _served(table: ModelTable, name: str, version: str | None) -> tuple[Serving, LoadedModel]:
    """The serving value and the version asked for (the current one by default); 404 for a
    version not served."""
    serving = table.get(name).require()
    if version is None or version == serving.current.version:
        return serving, serving.current
    if serving.candidate is not None and version == serving.candidate.version:
        return serving, serving.candidate
    raise VersionNotServedError(name, version, serving.versions())


class ModelResource:
    """``GET /v2/models/{name}[/versions/{version}]``: inputs, outputs, versions (current
    first); with ``ready``, ``.../ready``: 200 when it serves, 503 before."""

    def __init__(self, table: ModelTable, *, ready: bool = False) -> None:
        self._table = table
        self._ready = ready

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **route: str
    ) -> None:
        name = route["name"]
        serving, model = _served(self._table, name, route.get("version"))
        if self._ready:
            resp.media = {"name": name, "ready": True}
        else:
            resp.media = v2.model_metadata(name, serving.versions(), model.inputs, model.outputs)


class ServerMetadataResource:
    """``GET /v2``: the server's name, version and protocol extensions."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = v2.SERVER_METADATA


class ModelsResource:
    """``GET /models``: every model of the volume with what it serves and its last error."""

    def __init__(self, table: ModelTable) -> None:
        self._table = table

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        models = []
        for name, holder in sorted(self._table.holders.items()):
            serving = holder.serving
            entry: dict[str, Any] = {
                "name": name,
                "ready": serving is not None,
                "version": serving.current.version if serving else None,
                "sha256": serving.current.sha256 if serving else None,
                "lastError": holder.status.last_error,
            }
            if serving is not None and serving.candidate is not None:
                entry["candidate"] = {
                    "version": serving.candidate.version,
                    "mode": serving.rollout.mode.value if serving.rollout else None,
                    "weight": serving.rollout.weight if serving.rollout else 0,
                }
            models.append(entry)
        resp.media = {"models": models}


class LiveResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"live": True}


class ReadyResource:
    """``GET /v2/health/ready`` (the pod's readiness): the required models serve (see
    ``ModelTable.ready``)."""

    def __init__(self, table: ModelTable, retry_after: int) -> None:
        self._table = table
        self._retry_after = retry_after

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not self._table.ready():
            waiting = self._table.waiting()
            raise falcon.HTTPServiceUnavailable(
                title="Not ready",
                description=(
                    f"models not served yet: {', '.join(waiting)}"
                    if waiting
                    else "nothing is published in the volume yet"
                ),
                retry_after=self._retry_after,
            )
        resp.media = {"ready": True}


class MetricsResource:
    """Prometheus metrics; with ``port``, only to requests that arrived on that port."""

    def __init__(self, port: int | None = None) -> None:
        self._port = port

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        local = req.scope.get("server")
        if self._port is not None and (not local or local[1] != self._port):
            raise falcon.HTTPNotFound(description="/metrics is served on the metrics port only")
        data, content_type = await asyncio.to_thread(render)
        resp.data = data
        resp.content_type = content_type
