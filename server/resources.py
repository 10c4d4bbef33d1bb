"""HTTP resources: /predict, the KServe V2 subset, health, metrics, model status."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import falcon
import falcon.asgi
import numpy as np
import orjson

from server.batcher import Array
from server.errors import InvalidInputError, ServerError, status_of
from server.holder import Registry, Serving
from server.load import LoadedModel
from server.metrics import SHADOW, record_failure, render
from server.routing import choose
from server.validation import v2_inputs

log = logging.getLogger(__name__)

ROUTING_KEY_HEADER = "X-Routing-Key"
VERSION_HEADER = "X-Model-Version"


async def read_json(req: falcon.asgi.Request, max_bytes: int) -> Any:
    """The request body as JSON, with 415 for another content type and 413 past ``max_bytes``."""
    content_type = req.content_type
    if content_type is None or not content_type.startswith("application/json"):
        raise falcon.HTTPUnsupportedMediaType(
            description=f"send the body as JSON with 'Content-Type: application/json' "
            f"(got {content_type or 'no content type'})"
        )
    length = req.content_length
    if length is not None and length > max_bytes:
        raise falcon.HTTPContentTooLarge(
            description=f"the body has {length} bytes; the limit is {max_bytes} "
            "(SERVER_MAX_BODY_BYTES): send fewer rows per request"
        )
    raw = await req.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise falcon.HTTPContentTooLarge(
            description=f"the body exceeds the limit of {max_bytes} bytes (SERVER_MAX_BODY_BYTES)"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise falcon.HTTPBadRequest(
            title="Invalid JSON", description=f"the body is not valid JSON: {exc}"
        ) from None


def _route(req: falcon.asgi.Request, serving: Serving) -> tuple[LoadedModel, LoadedModel | None]:
    if serving.candidate is None:
        pinned = req.get_header(VERSION_HEADER)
        if not pinned or pinned == serving.current.version:
            return serving.current, None
    return choose(serving, req.get_header(ROUTING_KEY_HEADER), req.get_header(VERSION_HEADER))


class Shadows:
    """Runs the shadow candidate on a copy of the input and compares; never answers."""

    def __init__(self, tolerance: float) -> None:
        self._tolerance = tolerance
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, candidate: LoadedModel, rows: Array, served: list[Array]) -> None:
        task = asyncio.get_running_loop().create_task(self._compare(candidate, rows.copy(), served))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, candidate: LoadedModel, rows: Array, served: list[Array]) -> None:
        started = time.perf_counter()
        try:
            outputs = await candidate.infer_rows(rows)
        except Exception as exc:
            SHADOW.labels(candidate.name, candidate.version, "error").inc()
            log.warning("shadow %s %s failed: %s", candidate.name, candidate.version, exc)
            return
        candidate.metrics.request(200, time.perf_counter() - started)
        same = len(outputs) == len(served) and all(
            a.shape == b.shape
            and (
                np.allclose(a, b, rtol=0.0, atol=self._tolerance, equal_nan=True)
                if a.dtype.kind in "fiub" and b.dtype.kind in "fiub"
                else bool(np.array_equal(a, b))
            )
            for a, b in zip(outputs, served, strict=False)
        )
        SHADOW.labels(candidate.name, candidate.version, "same" if same else "different").inc()


class PredictResource:
    """``POST /predict`` (the default model) and ``POST /models/{name}/predict``."""

    def __init__(self, registry: Registry, max_body_bytes: int, shadows: Shadows) -> None:
        self._registry = registry
        self._max_body_bytes = max_body_bytes
        self._shadows = shadows

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str | None = None
    ) -> None:
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            holder = self._registry.default() if name is None else self._registry.get(name)
            name = holder.name
            serving = holder.require()
            body = await read_json(req, self._max_body_bytes)
            if not isinstance(body, dict) or "data" not in body:
                raise InvalidInputError(
                    'the body must be a JSON object {"data": [...]} with one row or a list of rows'
                )
            model, shadow = _route(req, serving)
            rows, single = model.rows(body["data"])
            outputs = await model.infer_rows(rows)
        except (ServerError, falcon.HTTPError) as exc:
            if model is not None:
                model.metrics.request(status_of(exc), None)
            else:
                record_failure(name or "", status_of(exc))
            raise
        resp.media = model.answer(outputs, single)
        resp.set_header(VERSION_HEADER, model.version)
        model.metrics.request(200, time.perf_counter() - started)
        if shadow is not None:
            self._shadows.submit(shadow, rows, outputs)


class InferResource:
    """``POST /v2/models/{name}/infer`` (Open Inference Protocol)."""

    def __init__(self, registry: Registry, max_body_bytes: int, shadows: Shadows) -> None:
        self._registry = registry
        self._max_body_bytes = max_body_bytes
        self._shadows = shadows

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            serving = self._registry.get(name).require()
            body = await read_json(req, self._max_body_bytes)
            if not isinstance(body, dict) or "inputs" not in body:
                raise InvalidInputError(
                    'the body must be a JSON object {"inputs": [{"name", "shape", "datatype", '
                    '"data"}]}'
                )
            model, shadow = _route(req, serving)
            feeds = v2_inputs(body["inputs"], model.inputs)
            if model.batcher is not None:
                rows = feeds[model.inputs[0].name]
                outputs = await model.infer_rows(rows)
            else:
                shadow = None
                outputs = await model.infer(feeds)
        except (ServerError, falcon.HTTPError) as exc:
            if model is not None:
                model.metrics.request(status_of(exc), None)
            else:
                record_failure(name, status_of(exc))
            raise
        resp.media = model.v2_answer(outputs, body.get("id"))
        resp.set_header(VERSION_HEADER, model.version)
        model.metrics.request(200, time.perf_counter() - started)
        if shadow is not None:
            self._shadows.submit(shadow, rows, outputs)


class ModelMetadataResource:
    """``GET /v2/models/{name}``: inputs, outputs and versions (current first)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        serving = self._registry.get(name).require()
        metadata = serving.current.v2_metadata
        if serving.candidate is not None:
            metadata = {**metadata, "versions": serving.versions()}
        resp.media = metadata


class ModelReadyResource:
    """``GET /v2/models/{name}/ready``: 200 when it serves, 503 before."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        self._registry.get(name).require()
        resp.media = {"name": name, "ready": True}


class ModelsResource:
    """``GET /models``: every model of the volume with what it serves and its last error."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        models = []
        for name, holder in sorted(self._registry.holders.items()):
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
    """``GET /v2/health/ready``: every model of the volume serves a version."""

    def __init__(self, registry: Registry, retry_after: int) -> None:
        self._registry = registry
        self._retry_after = retry_after

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not self._registry.ready():
            waiting = [n for n, h in self._registry.holders.items() if h.serving is None]
            raise falcon.HTTPServiceUnavailable(
                title="Not ready",
                description=(
                    f"models not loaded yet: {', '.join(waiting)}"
                    if waiting
                    else "nothing is published in the volume yet"
                ),
                retry_after=self._retry_after,
            )
        resp.media = {"ready": True}


class MetricsResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        data, content_type = await asyncio.to_thread(render)
        resp.data = data
        resp.content_type = content_type
