"""HTTP resources: /predict, the KServe V2 subset, health, metrics, model status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import falcon
import falcon.asgi

from server.errors import InvalidInputError, ServerError
from server.holder import Registry
from server.load import LoadedModel
from server.metrics import record_failure, render
from server.predict import (
    VERSION_HEADER,
    Predictor,
    Shadows,
    check_body,
    parse_json,
    route,
)
from server.validation import v2_inputs


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
            check_body(req.content_type, req.content_length, self._max_body_bytes)
            body = parse_json(await read_body(req, self._max_body_bytes), self._max_body_bytes)
            if not isinstance(body, dict) or "inputs" not in body:
                raise InvalidInputError(
                    'the body must be a JSON object {"inputs": [{"name", "shape", "datatype", '
                    '"data"}]}'
                )
            model, shadow = route(serving, req.get_header)
            feeds = v2_inputs(body["inputs"], model.inputs)
            if model.batcher is not None:
                rows = feeds[model.inputs[0].name]
                outputs = await model.infer_rows(rows)
            else:
                shadow = None
                outputs = await model.infer(feeds)
        except ServerError as exc:
            if model is not None:
                model.metrics.request(exc.status, None)
            else:
                record_failure(name, exc.status)
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
