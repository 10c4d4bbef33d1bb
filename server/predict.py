"""``/predict`` without the web framework: bytes and headers in, an answer or a ServerError out.

The Falcon resource and the fast HTTP worker (server.worker) both call it, so the contract lives
in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from server.batcher import Array
from server.errors import (
    BodyTooLargeError,
    InvalidInputError,
    InvalidJsonError,
    ServerError,
    UnsupportedMediaTypeError,
)
from server.holder import Registry, Serving
from server.load import LoadedModel
from server.metrics import SHADOW, record_failure
from server.routing import choose

log = logging.getLogger(__name__)

ROUTING_KEY_HEADER = "X-Routing-Key"
VERSION_HEADER = "X-Model-Version"

Header = Callable[[str], str | None]
"""Looks a request header up by name (case-insensitive), None when absent."""


def check_body(content_type: str | None, length: int | None, limit: int) -> None:
    """415 for anything but JSON, 413 past the limit (before reading the body)."""
    if content_type is None or not content_type.startswith("application/json"):
        raise UnsupportedMediaTypeError(content_type)
    if length is not None and length > limit:
        raise BodyTooLargeError(length, limit)


def parse_json(raw: bytes, limit: int) -> Any:
    if len(raw) > limit:
        raise BodyTooLargeError(None, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJsonError(str(exc)) from None


def route(serving: Serving, header: Header) -> tuple[LoadedModel, LoadedModel | None]:
    """The version that answers (and the shadow one); no header lookups without a candidate."""
    if serving.candidate is None:
        pinned = header(VERSION_HEADER)
        if not pinned or pinned == serving.current.version:
            return serving.current, None
    return choose(serving, header(ROUTING_KEY_HEADER), header(VERSION_HEADER))


@dataclass(frozen=True, slots=True)
class Answer:
    model: LoadedModel
    body: dict[str, Any]


class Shadows:
    """Runs the shadow candidate on a copy of the input and compares; never answers."""

    def __init__(self, tolerance: float) -> None:
        self._tolerance = tolerance
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, candidate: LoadedModel, rows: Array, served: list[Array]) -> None:
        task = asyncio.get_running_loop().create_task(self._compare(candidate, rows.copy(), served))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def differs(self, outputs: list[Array], served: list[Array]) -> bool:
        if len(outputs) != len(served):
            return True
        for a, b in zip(outputs, served, strict=True):
            if a.shape != b.shape:
                return True
            if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
                if not np.allclose(a, b, rtol=0.0, atol=self._tolerance, equal_nan=True):
                    return True
            elif not np.array_equal(a, b):
                return True
        return False

    async def _compare(self, candidate: LoadedModel, rows: Array, served: list[Array]) -> None:
        started = time.perf_counter()
        try:
            outputs = await candidate.infer_rows(rows)
        except Exception as exc:
            SHADOW.labels(candidate.name, candidate.version, "error").inc()
            log.warning("shadow %s %s failed: %s", candidate.name, candidate.version, exc)
            return
        candidate.metrics.request(200, time.perf_counter() - started)
        result = "different" if self.differs(outputs, served) else "same"
        SHADOW.labels(candidate.name, candidate.version, result).inc()


class Predictor:
    """The ``{"data": [...]}`` contract for one registry."""

    def __init__(self, registry: Registry, max_body_bytes: int, shadows: Shadows) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.shadows = shadows

    def check(self, name: str | None, content_type: str | None, length: int | None) -> None:
        """:func:`check_body`, counting a refusal in the metrics."""
        try:
            check_body(content_type, length, self.max_body_bytes)
        except ServerError as exc:
            record_failure(name or "", exc.status)
            raise

    def prepare(
        self, name: str | None, raw: bytes, header: Header, *, sync_only: bool = False
    ) -> Prepared | None:
        """Everything before inference; None when ``sync_only`` and the model cannot run on the
        event loop (a slow model runs in a thread; a canary or shadow takes the async path)."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            holder = self.registry.default() if name is None else self.registry.get(name)
            name = holder.name
            serving = holder.require()
            if sync_only and (serving.candidate is not None or not serving.current.inline):
                return None
            body = parse_json(raw, self.max_body_bytes)
            if not isinstance(body, dict) or "data" not in body:
                raise InvalidInputError(
                    'the body must be a JSON object {"data": [...]} with one row or a list of rows'
                )
            model, shadow = route(serving, header)
            rows, single = model.rows(body["data"])
        except ServerError as exc:
            if model is not None:
                model.metrics.request(exc.status, None)
            else:
                record_failure(name or "", exc.status)
            raise
        return Prepared(model, shadow, rows, single, started)

    def failed(self, prepared: Prepared, exc: ServerError) -> None:
        prepared.model.metrics.request(exc.status, None)

    def finish(self, prepared: Prepared, outputs: list[Array]) -> Answer:
        model = prepared.model
        answer = Answer(model, model.answer(outputs, prepared.single))
        model.metrics.request(200, time.perf_counter() - prepared.started)
        if prepared.shadow is not None:
            self.shadows.submit(prepared.shadow, prepared.rows, outputs)
        return answer

    async def predict(self, name: str | None, raw: bytes, header: Header) -> Answer:
        """Answer one request whose headers passed :func:`check_body` (batched with others)."""
        prepared = self.prepare(name, raw, header)
        assert prepared is not None
        try:
            outputs = await prepared.model.infer_rows(prepared.rows)
        except ServerError as exc:
            prepared.model.metrics.request(exc.status, None)
            raise
        return self.finish(prepared, outputs)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request checked and routed, ready for inference."""

    model: LoadedModel
    shadow: LoadedModel | None
    rows: Array
    single: bool
    started: float
