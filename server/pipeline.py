"""The one request pipeline: (route, headers, body) -> answer, for every route and worker class.

The Falcon resources (server.resources) and the lean worker's ``/predict`` (server.worker) hand
their requests here. Authentication, the body limit, validation, the choice of version (pin,
canary, shadow), inference through the batcher, metrics and the mapping of errors to answers
are each written once, below. No web framework here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from server import predict, routing, v2
from server.auth import BearerToken
from server.batcher import Array, Batcher
from server.errors import (
    BodyTooLargeError,
    MetricsPortOnlyError,
    NotFoundError,
    NotReadyError,
    ServerError,
    UnsupportedMediaTypeError,
    VersionNotServedError,
    error_body,
    error_headers,
)
from server.holder import ModelTable, Serving
from server.load import LoadedModel
from server.metrics import record_failure, render
from server.routing import Header
from server.settings import ServerSettings
from server.shadow import Shadows
from server.wire import JSON, dumps, media_type

log = logging.getLogger(__name__)

INLINE_MAX_BODY_BYTES = 64 * 1024
"""Bodies up to this size are decoded and run on the event loop; larger ones in a thread."""

Body = bytes | Callable[[int], Awaitable[bytes]]
"""The body, or a reader of at most that many bytes (read only once the headers pass)."""


class Kind(StrEnum):
    PREDICT = "POST /predict, /models/{name}/predict"
    INFER = "POST /v2/models/{name}[/versions/{version}]/infer"
    MODEL = "GET /v2/models/{name}[/versions/{version}]"
    MODEL_READY = "GET /v2/models/{name}[/versions/{version}]/ready"
    SERVER = "GET /v2"
    LIVE = "GET /v2/health/live"
    READY = "GET /v2/health/ready"
    MODELS = "GET /models"
    METRICS = "GET /metrics"
    UNKNOWN = "a path no route has"
    UNKNOWN_V2 = "a path under /v2 no route has"


_V2 = frozenset(kind for kind in Kind if "/v2" in kind.value)
"""Open Inference Protocol routes: their errors are ``{"error": "..."}``."""
_OPEN = frozenset({Kind.LIVE, Kind.READY, Kind.METRICS})
"""Routes without authentication: the probes and the scrape."""
_INFERENCE = frozenset({Kind.PREDICT, Kind.INFER})
"""Routes counted in server_requests_total."""


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    name: str | None = None
    version: str | None = None
    port: int | None = None
    """The local port the request arrived on (``/metrics`` may be served on one port only)."""


class Answer(NamedTuple):
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    """Lower-case names, as ASGI has them; the content type among them."""


_DEFAULT_PREDICT = Route(Kind.PREDICT)


def _json(value: Any) -> Answer:
    return Answer(200, dumps(value), [(b"content-type", JSON)])


_Parsed = tuple[LoadedModel, LoadedModel | None, dict[str, Array], bool]
"""A routed /predict: (version, shadow version, feeds, one row?); cheaper than a NamedTuple."""


@dataclass(slots=True)
class _Trace:
    """What one request reached, for its metrics."""

    name: str | None
    model: LoadedModel | None = None


Handler = Callable[[Route, Header, Body, _Trace], Awaitable[Answer]]


class Pipeline:
    def __init__(self, table: ModelTable, settings: ServerSettings) -> None:
        self._table = table
        self._limit = settings.max_body_bytes
        self._retry_after = settings.retry_after_seconds
        self._metrics_port = settings.metrics_port
        secret = settings.auth_token
        self.token = BearerToken(secret.get_secret_value()) if secret is not None else None
        self._batcher = Batcher(
            max_rows=settings.batch_max_rows, window_s=settings.batch_window_us / 1e6
        )
        self._shadows = Shadows(settings.shadow_tolerance, settings.load_timeout_seconds)
        self._handlers: dict[Kind, Handler] = {
            kind: getattr(self, f"_{kind.name.lower()}") for kind in Kind
        }  # Kind.MODEL_READY -> self._model_ready, ...

    async def __call__(self, route: Route, header: Header, body: Body) -> Answer:
        """The answer to one request; never raises."""
        started = time.perf_counter()
        trace = _Trace(route.name)
        try:
            self._admit(route.kind, header)
            answer = await self._handlers[route.kind](route, header, body, trace)
        except Exception as exc:
            answer = self._failed(route.kind, exc)
        return self._counted(route.kind, trace, answer, started)

    def predict_now(
        self, requests: Sequence[tuple[str | None, Header, bytes]]
    ) -> list[Answer | None]:
        """The answers to ``POST /predict`` requests (the model's name or None, headers, body)
        that arrived together, computed now with one onnxruntime call per version: the lean
        worker's road for the predictions of one event-loop turn, through the same steps as
        :meth:`__call__` (awaiting a coroutine per request costs more than the inference).
        None for a request that must wait (a large body, a version run in a thread): answer
        it with :meth:`predict`."""
        answers: list[Answer | None] = [None] * len(requests)
        groups: dict[int, list[tuple[int, _Trace, float, _Parsed]]] = {}  # by id(version)
        for index, (name, header, body) in enumerate(requests):
            if len(body) > INLINE_MAX_BODY_BYTES:
                continue
            started, trace = time.perf_counter(), _Trace(name)
            try:
                self._admit(Kind.PREDICT, header)
                model, shadow = self._route_prediction(name, header, trace)
                if len(body) > self._limit:  # chunked: no length up front
                    raise BodyTooLargeError(None, self._limit)
                if model.inline:
                    feeds, single = predict.parse(body, model.inputs)
                    parsed = (model, shadow, feeds, single)
                    groups.setdefault(id(model), []).append((index, trace, started, parsed))
            except Exception as exc:
                failure = self._failed(Kind.PREDICT, exc)
                answers[index] = self._counted(Kind.PREDICT, trace, failure, started)
        for group in groups.values():
            results = self._batcher.run_now(group[0][3][0], [item[3][2] for item in group])
            for (index, trace, started, parsed), result in zip(group, results, strict=True):
                try:
                    if isinstance(result, BaseException):
                        raise result
                    answer = self._predicted(parsed, result)
                except Exception as exc:
                    answer = self._failed(Kind.PREDICT, exc)
                answers[index] = self._counted(Kind.PREDICT, trace, answer, started)
        return answers

    def _admit(self, kind: Kind, header: Header) -> None:
        """Authentication, and a declared length past the limit before the body is read."""
        self.authorize(kind, header)
        length = header("content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            raise BodyTooLargeError(int(length), self._limit)

    def _failed(self, kind: Kind, exc: Exception) -> Answer:
        if isinstance(exc, ServerError):
            return self.error(kind, exc)
        log.error("unexpected error answering %s", kind.value, exc_info=exc)
        return self.error(kind, ServerError("see the server log"))

    def _counted(self, kind: Kind, trace: _Trace, answer: Answer, started: float) -> Answer:
        """``answer``, counted in the metrics when ``kind`` is an inference."""
        if kind in _INFERENCE:
            model = trace.model
            if model is None:
                record_failure(self._table.label(trace.name), answer.status)
            elif answer.status == 200:
                model.metrics.request(200, time.perf_counter() - started)
            else:
                model.metrics.request(answer.status, None)
        return answer

    def predict(self, name: str | None, header: Header, body: Body) -> Coroutine[Any, Any, Answer]:
        """``POST /predict`` (``name`` None) or ``POST /models/{name}/predict``."""
        return self(_DEFAULT_PREDICT if name is None else Route(Kind.PREDICT, name), header, body)

    def authorize(self, kind: Kind, header: Header) -> None:
        """Raise UnauthorizedError unless ``kind`` is open or the request carries the token;
        for every request, also those no route answers (server.resources)."""
        if self.token is not None and kind not in _OPEN:
            self.token.check(header("authorization"))

    def error(self, kind: Kind, exc: ServerError) -> Answer:
        if exc.status >= 500 and exc.status != 503:
            log.error("%s", exc, exc_info=exc)
        body = error_body(kind in _V2, exc.title, str(exc))
        return Answer(exc.status, body, error_headers(exc, self._retry_after))

    async def _read(self, body: Body) -> bytes:
        raw = body if isinstance(body, bytes) else await body(self._limit + 1)
        if len(raw) > self._limit:  # chunked: no length up front
            raise BodyTooLargeError(None, self._limit)
        return raw

    def _route_prediction(
        self, name: str | None, header: Header, trace: _Trace
    ) -> tuple[LoadedModel, LoadedModel | None]:
        """(the version that answers, the version that shadows it) for a ``/predict``."""
        content_type = header("content-type")
        if media_type(content_type) != "application/json":
            raise UnsupportedMediaTypeError(content_type)
        holder = self._table.default() if name is None else self._table.get(name)
        trace.name = holder.name
        model, shadow = routing.route(holder.require(), header)
        trace.model = model
        return model, shadow

    async def _predict(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        model, shadow = self._route_prediction(route.name, header, trace)
        raw = await self._read(body)
        large = len(raw) > INLINE_MAX_BODY_BYTES
        parse = functools.partial(predict.parse, raw, model.inputs)
        feeds, single = await asyncio.to_thread(parse) if large else parse()
        outputs = await self._batcher.infer(model, feeds, inline=not large)
        return self._predicted((model, shadow, feeds, single), outputs)

    def _predicted(self, request: _Parsed, outputs: list[Array]) -> Answer:
        model, shadow, feeds, single = request
        if shadow is not None:
            self._shadows.submit(shadow, feeds, outputs)
        one_row = model.per_row if single else ()
        data = predict.encode(model.name, model.version, model.outputs, outputs, one_row)
        version = model.version.encode("latin-1", errors="replace")
        return Answer(200, data, [(b"content-type", JSON), (b"x-model-version", version)])

    async def _infer(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        serving = self._table.get(str(route.name)).require()
        header_length = header(v2.HEADER_LENGTH)
        v2.check_media_type(header("content-type"), header_length)
        raw = await self._read(body)
        model, shadow = routing.route(serving, header, route.version)
        trace.model = model

        decode = functools.partial(v2.decode, raw, header_length, model.inputs, model.outputs)
        large = len(raw) > INLINE_MAX_BODY_BYTES
        request, feeds, chosen = await asyncio.to_thread(decode) if large else decode()
        outputs = await self._batcher.infer(model, feeds, inline=not large)
        if shadow is not None:
            self._shadows.submit(shadow, feeds, outputs)
        data, headers = v2.encode_answer(
            model.name, model.version, outputs, chosen, request.body.get("id")
        )
        headers.append((b"x-model-version", model.version.encode("latin-1", errors="replace")))
        return Answer(200, data, headers)

    def _served(self, route: Route) -> tuple[Serving, LoadedModel]:
        """The serving value and the version asked for (the current one by default)."""
        name, version = str(route.name), route.version
        serving = self._table.get(name).require()
        if version is None or version == serving.current.version:
            return serving, serving.current
        if serving.candidate is not None and version == serving.candidate.version:
            return serving, serving.candidate
        raise VersionNotServedError(name, version, serving.versions())

    async def _model(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        serving, model = self._served(route)
        return _json(v2.model_metadata(model.name, serving.versions(), model.inputs, model.outputs))

    async def _model_ready(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        self._served(route)
        return _json({"name": route.name, "ready": True})

    async def _server(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        return _json(v2.SERVER_METADATA)

    async def _live(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        return _json({"live": True})

    async def _ready(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        """The pod's readiness: the required models serve (see ``ModelTable.ready``)."""
        if not self._table.ready():
            raise NotReadyError(self._table.waiting())
        return _json({"ready": True})

    async def _models(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        """Every model of the volume with what it serves and its last error."""
        models = []
        for name, holder in sorted(self._table.holders.items()):
            serving = holder.serving
            entry: dict[str, Any] = {
                "name": name,
                "ready": serving is not None,
                "version": serving.current.version if serving else None,
                "sha256": serving.current.sha256 if serving else None,
                "lastError": holder.last_error,
            }
            if serving is not None and serving.candidate is not None:
                rollout = serving.rollout
                entry["candidate"] = {
                    "version": serving.candidate.version,
                    "mode": rollout.mode.value if rollout else None,
                    "weight": rollout.weight if rollout else 0,
                }
            models.append(entry)
        return _json({"models": models})

    async def _unknown(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        raise NotFoundError

    _unknown_v2 = _unknown

    async def _metrics(self, route: Route, header: Header, body: Body, trace: _Trace) -> Answer:
        """Prometheus metrics; with SERVER_METRICS_PORT, only on that port."""
        if self._metrics_port is not None and route.port != self._metrics_port:
            raise MetricsPortOnlyError
        data, content_type = await asyncio.to_thread(render)
        return Answer(200, data, [(b"content-type", content_type.encode())])
