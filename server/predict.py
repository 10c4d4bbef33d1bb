"""``/predict`` without the web framework: bytes and headers in, an answer or a ServerError out.

The Falcon resource and the fast HTTP worker (server.worker) both call it, so the contract lives
in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
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
from server.holder import ModelTable, Serving
from server.load import LoadedModel
from server.metrics import SHADOW, record_failure
from server.routing import choose
from server.validation import feeds_from_data, jsonable

log = logging.getLogger(__name__)

ROUTING_KEY_HEADER = "X-Routing-Key"
VERSION_HEADER = "X-Model-Version"
INLINE_MAX_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop; larger ones in a thread."""

Header = Callable[[str], str | None]
"""Looks a request header up by name (case-insensitive), None when absent."""


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json`` (lower case); None if absent."""
    if content_type is None:
        return None
    return content_type.partition(";")[0].strip().lower()


def check_body(
    content_type: str | None, length: int | None, limit: int, *, json_by_default: bool = False
) -> None:
    """415 for anything but JSON (the whole media type, not a prefix), 413 past the limit
    (before reading the body). ``json_by_default``: no Content-Type means JSON (V2)."""
    kind = media_type(content_type)
    if not (kind == "application/json" or (kind is None and json_by_default)):
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

    def submit(
        self, candidate: LoadedModel, feeds: Mapping[str, Array], served: list[Array]
    ) -> None:
        copies = {name: array.copy() for name, array in feeds.items()}
        task = asyncio.get_running_loop().create_task(self._compare(candidate, copies, served))
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
            elif a.tolist() != b.tolist():  # strings, ZipMap dicts
                return True
        return False

    async def _compare(
        self, candidate: LoadedModel, feeds: dict[str, Array], served: list[Array]
    ) -> None:
        started = time.perf_counter()
        try:
            outputs = await candidate.infer_feeds(feeds)
        except Exception as exc:
            SHADOW.labels(candidate.name, candidate.version, "error").inc()
            log.warning("shadow %s %s failed: %s", candidate.name, candidate.version, exc)
            return
        candidate.metrics.request(200, time.perf_counter() - started)
        result = "different" if self.differs(outputs, served) else "same"
        SHADOW.labels(candidate.name, candidate.version, result).inc()


class Predictor:
    """The ``{"data": [...]}`` contract for one table."""

    def __init__(self, table: ModelTable, max_body_bytes: int, shadows: Shadows) -> None:
        self.table = table
        self.max_body_bytes = max_body_bytes
        self.shadows = shadows

    def check(self, name: str | None, content_type: str | None, length: int | None) -> None:
        """:func:`check_body`, counting a refusal in the metrics."""
        try:
            check_body(content_type, length, self.max_body_bytes)
        except ServerError as exc:
            record_failure(self.table.label(name), exc.status)
            raise

    def prepare(
        self, name: str | None, raw: bytes, header: Header, *, sync_only: bool = False
    ) -> Prepared | None:
        """Everything before inference; None when ``sync_only`` and the model cannot run on the
        event loop (a slow model runs in a thread; a canary or shadow takes the async path)."""
        started = time.perf_counter()
        model: LoadedModel | None = None
        try:
            holder = self.table.default() if name is None else self.table.get(name)
            name = holder.name
            serving = holder.require()
            if sync_only and (serving.candidate is not None or not serving.current.inline):
                return None
            if sync_only and len(raw) > INLINE_MAX_BODY_BYTES:
                return None  # decoded off the event loop (predict_async)
            body = parse_json(raw, self.max_body_bytes)
            if not isinstance(body, dict) or "data" not in body:
                raise InvalidInputError(
                    'the body must be a JSON object {"data": [...]} with one row or a list of '
                    'rows, or {"data": {"<input name>": rows, ...}}'
                )
            model, shadow = route(serving, header)
            feeds, single = feeds_from_data(body["data"], model.inputs)
        except ServerError as exc:
            if model is not None:
                model.metrics.request(exc.status, None)
            else:
                record_failure(self.table.label(name), exc.status)
            raise
        return Prepared(model, shadow, feeds, single, started)

    def failed(self, prepared: Prepared, exc: ServerError) -> None:
        prepared.model.metrics.request(exc.status, None)

    def finish(self, prepared: Prepared, outputs: list[Array]) -> Answer:
        model = prepared.model
        answer = Answer(model, predict_body(model, outputs, prepared.single))
        model.metrics.request(200, time.perf_counter() - prepared.started)
        if prepared.shadow is not None:
            self.shadows.submit(prepared.shadow, prepared.feeds, outputs)
        return answer

    async def predict(self, name: str | None, raw: bytes, header: Header) -> Answer:
        """Answer one request whose headers passed :func:`check_body` (batched with others).

        A large body is decoded and checked in a thread, so that it never stalls the event
        loop (health probes, other connections)."""
        if len(raw) > INLINE_MAX_BODY_BYTES:
            prepared = await asyncio.to_thread(self.prepare, name, raw, header)
        else:
            prepared = self.prepare(name, raw, header)
        assert prepared is not None
        try:
            if len(raw) > INLINE_MAX_BODY_BYTES:
                outputs = await asyncio.to_thread(prepared.model.run_feeds, prepared.feeds)
            else:
                outputs = await prepared.model.infer_feeds(prepared.feeds)
        except ServerError as exc:
            prepared.model.metrics.request(exc.status, None)
            raise
        return self.finish(prepared, outputs)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request checked and routed, ready for inference."""

    model: LoadedModel
    shadow: LoadedModel | None
    feeds: dict[str, Array]
    single: bool
    started: float


def predict_body(model: LoadedModel, outputs: list[Array], single: bool) -> dict[str, Any]:
    """The ``/predict`` body: first output as ``prediction``; all of them when several."""
    values = [jsonable(out[0] if single else out) for out in outputs]
    body: dict[str, Any] = {
        "model": model.name,
        "modelVersion": model.version,
        "prediction": values[0],
    }
    if len(values) > 1:
        body["outputs"] = {
            spec.name: value for spec, value in zip(model.outputs, values, strict=True)
        }
    return body
