"""A lean HTTP/1.1 gunicorn worker (uvloop + httptools) with a fast path for ``/predict``.

uvicorn's worker spends more per request than the whole inference of a small model. This
worker parses with httptools on uvloop, hands ``POST /predict`` and ``POST /models/{name}/
predict`` to the request pipeline (server.pipeline) directly, and every other request to the
Falcon ASGI app (one buffered ASGI call), whose resources call the same pipeline. What is
here is HTTP/1.1 only: framing, keep-alive, pipelining (answers in order), the head and body
limits, idle timeout, graceful stop and gunicorn's heartbeat.

Select it with ``SERVER_WORKER_CLASS=server.worker.HttpWorker`` (the default of the gunicorn
config); ``uvicorn_worker.UvicornWorker`` still works with the same app.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import httptools
import uvloop
from falcon.constants import SINGLETON_HEADERS
from gunicorn.workers.base import Worker

from server.errors import error_body, is_v2

if TYPE_CHECKING:  # gunicorn imports this module in the master: keep onnxruntime out of it
    from server.pipeline import Pipeline

log = logging.getLogger(__name__)

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_JSON = b"application/json"
_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
_PREDICT = b"/predict"
_MODELS = b"/models/"


_MAX_HEAD_BYTES = 64 * 1024  # request line and headers of one request (then 431)
_MAX_QUEUED = 16  # pipelined requests waiting on one connection before reading pauses
_REQUEST_LINE = re.compile(rb"[A-Z][A-Z0-9_-]{0,31} \S+ HTTP/1\.[01]\r?\n")
_LINGER_SECONDS = 5.0  # how long a refused body is read away before the connection closes

_Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


@dataclass(slots=True)
class _Request:
    method: bytes
    path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http_version: str = "1.1"
    refusal: _Answer | None = None  # answered as is (malformed, too large): then close
    by_name: dict[bytes, bytes] | None = None  # the headers by name, when no name repeats

    def header(self, name: str) -> str | None:
        """The header's value; several headers of that name joined by a comma, or the last
        one of a header that may appear once (Content-Type): as Falcon reads them."""
        wanted = name.lower().encode("latin-1")
        if self.by_name is not None:  # no name repeated: one lookup
            value = self.by_name.get(wanted)
            return None if value is None else value.decode("latin-1")
        found = [value for key, value in self.headers if key == wanted]
        if len(found) < 2:
            return found[0].decode("latin-1") if found else None
        return (found[-1] if wanted in _SINGLETONS else b",".join(found)).decode("latin-1")


@dataclass(slots=True)
class _Shared:
    """Per-worker state every connection sees."""

    app: Any
    """The ASGI app every route but /predict goes to (server.app.ServerApp)."""
    pipeline: Pipeline
    """The pipeline /predict goes to."""
    max_body_bytes: int
    keepalive: float
    body_timeout: float = 30.0
    """Most seconds one request (head and body) may take to arrive, however it trickles."""
    max_connections: int = 1000
    """gunicorn's ``worker_connections``: a connection beyond it is closed when accepted."""
    connections: set[HttpProtocol] = field(default_factory=set)
    stopping: bool = False
    arrived: list[tuple[HttpProtocol, _Request, str | None]] = field(default_factory=list)
    """The predictions of this loop turn, answered together once its reads are done."""
    answer_after_parse: bool = False
    """A lone connection's bytes are being parsed: answered right after (data_received)."""


def _response(
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    *,
    http_10: bool = False,
    head: bool = False,
) -> bytes:
    """The bytes of one answer; ``head``: the headers of the answer without its body."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    has_length = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            has_length = True
        elif lowered == b"connection":
            continue  # this layer decides
        lines.append(b"%s: %s\r\n" % (name, value))
    if not has_length:
        lines.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    elif http_10:
        lines.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client closes otherwise
    lines.append(b"\r\n")
    if not head:
        lines.append(body)
    return b"".join(lines)


def _refusal(
    status: int, description: str, *extra: tuple[bytes, bytes], path: bytes = b""
) -> _Answer:
    body = error_body(is_v2(path.decode("latin-1")), HTTPStatus(status).phrase, description)
    return status, body, [(b"content-type", _JSON), *extra]


class HttpProtocol(asyncio.Protocol):
    """One client connection: parse, queue, answer in order.

    A request that cannot be served as sent (malformed, head or body over the limits, unknown
    method) is queued as a refusal, answered in its turn (a body over the limit by the
    pipeline, which counts it), then the connection closes; what the client still sends is
    read away for a while first ("lingering close"), so that it sees the answer, not a reset.
    """

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[_Request] = collections.deque()
        self._busy = False
        self._paused = False  # reading paused: too many queued requests or a slow reader
        self._writer_paused = False  # the client does not read its answers fast enough
        self._waiting_for_writer = False  # the next answer waits until the client reads
        self._refused = False  # a refusal is queued: the rest of the input is ignored
        self._lingering = False  # answered and half-closed: reading the rest away
        self._eof = False  # the client has closed its side
        self._in_message = False  # between the first byte of a request and its end
        self._declares_body = False  # the current request's head announces a body
        self._expect_continue = False  # a "100 Continue" is owed when this request's turn comes
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._held_head = b""  # an upgrade request's head, to parse its body again
        self._head_bytes = 0
        self._head_received = 0  # bytes read since a head began, while it is incomplete
        self._body: list[bytes] = []
        self._body_size = 0
        self._peer: tuple[str, int] | None = None
        self._local: tuple[str, int] | None = None
        self.last_active = time.monotonic()
        self._head_started: float | None = None  # a request head is arriving since then
        self._message_started = 0.0  # the current request's first byte arrived then
        self._linger_until = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop sets TCP_NODELAY
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self._peer = tuple(peer[:2]) if isinstance(peer, tuple) else None
        self._local = tuple(local[:2]) if isinstance(local, tuple) else None
        if len(self._shared.connections) >= self._shared.max_connections:
            transport.close()  # idle sockets by the thousand ran the worker out of descriptors
            return
        self._shared.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.connections.discard(self)
        self._transport = None

    def eof_received(self) -> bool:
        """The client closed its side: answer what it sent (half-close), then close."""
        self._eof = True
        return not self._lingering and (self._busy or bool(self._queue))

    def pause_writing(self) -> None:
        self._writer_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writer_paused = False
        if self._waiting_for_writer:
            self._waiting_for_writer = False
            self._next()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        shared = self._shared
        # Alone, nothing to join: its predictions are answered once parsed (see _next).
        alone = shared.answer_after_parse = len(shared.connections) == 1
        if self._head_started is not None or not self._in_message:  # a head may be arriving
            self._head_received += len(data)  # (zeroed when a head completes)
        try:
            self._parse(data)
        finally:
            shared.answer_after_parse = False
        if self._head_started is not None and self._head_received > _MAX_HEAD_BYTES:
            self._head_too_large()  # one header value without an end: httptools holds it whole
        if alone and shared.arrived:
            _answer_arrived(shared)

    def _parse(self, data: bytes) -> None:
        while not self._refused:  # after a refusal the input is read away or ignored
            try:
                self._parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as exc:
                # No protocol switch here (h2c, websocket): RFC 9110 lets a server ignore
                # Upgrade and answer over HTTP/1.1. Go on with a fresh parser after that head.
                self._parser = httptools.HttpRequestParser(self)
                held, self._held_head = self._held_head, b""
                data = held + data[int(exc.args[0]) :]
            except httptools.HttpParserInvalidMethodError:
                if _REQUEST_LINE.match(data) and not self._queue and not self._busy:
                    self._refuse(
                        501, "this method is not supported; the inference routes take POST",
                        (b"allow", b"GET, HEAD, POST, OPTIONS"),
                    )  # fmt: skip
                else:  # not HTTP at all (TLS, junk)
                    self._refuse(400, "malformed HTTP request: not an HTTP/1.x request line")
            except httptools.HttpParserError as exc:
                if not self._refused:  # a callback may have refused already
                    self._refuse(400, f"malformed HTTP request: {exc}")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._in_message = True
        self._head_started = self._message_started = time.monotonic()
        self._url = b""
        self._headers = []
        self._head_bytes = 16  # "POST  HTTP/1.1\r\n" around the URL
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF: 40,000 "a:" count too
        if self._head_bytes > _MAX_HEAD_BYTES:
            self._head_too_large()

    def _head_too_large(self) -> None:
        if not self._refused:
            self._refuse(431, f"the request line and headers exceed {_MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        self._head_started = None
        self._head_received = 0
        if self._refused:
            return
        version = self._parser.get_http_version()
        if version not in ("1.1", "1.0"):  # 0.9 (no version) or 2.0+ spoken as text
            if version.startswith(("0.", "1.")):
                self._refuse(400, f"malformed HTTP request: HTTP/{version} is not HTTP/1.x")
            else:
                self._refuse(505, f"HTTP/{version} is not served here: use HTTP/1.1")
            return
        length: int | None = None
        expect = b""
        chunked = False
        for name, value in self._headers:
            if name == b"content-length":
                length = int(value)  # httptools has checked that it is a number
            elif name == b"expect":
                expect = value
            elif name == b"transfer-encoding":
                chunked = True
        self._declares_body = bool(length) or chunked
        if length is not None and length > self._shared.max_body_bytes:
            # Refused on the head alone: the body is never read into memory.
            self._refuse_too_large()
            return
        if expect and expect.lower() == b"100-continue" and version == "1.1":
            self._expect_continue = True
            if not self._busy and not self._queue:
                self._send_continue()

    def _send_continue(self) -> None:
        self._expect_continue = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(body)
        self._body.append(body)
        if self._body_size > self._shared.max_body_bytes:  # chunked: no length up front
            self._refuse_too_large()

    def _refuse_too_large(self) -> None:
        """Answer this request as it is (its body past the limit, or not read) and read no
        more: the pipeline or the app answers 413 from its length."""
        self._refused = True
        self._enqueue(self._request_read(keep_alive=False))

    def on_message_complete(self) -> None:
        if self._refused:
            return
        if self._parser.should_upgrade() and self._declares_body:
            # httptools skips the body of an upgrade request (curl --http2 sends one with its
            # POST): read the request again without the upgrade (see data_received).
            self._held_head = self._head_without_upgrade()
            return
        keep_alive = self._parser.should_keep_alive() and not self._shared.stopping
        self._enqueue(self._request_read(keep_alive))

    def _request_read(self, keep_alive: bool) -> _Request:
        """The request read so far (the whole of it, or as much as was read of a refused one)."""
        self._in_message = False
        self._expect_continue = False
        url = self._url
        if not url.startswith(b"/") and url[:4].lower() == b"http":  # absolute form
            try:
                parsed = httptools.parse_url(url)
                path, query = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                path, query = url, b""
        else:
            path, _, query = url.partition(b"?")
        headers, by_name = self._headers, dict(self._headers)
        return _Request(
            method=self._parser.get_method(),
            path=path,
            query=query,
            headers=headers,
            body=b"".join(self._body) if len(self._body) != 1 else self._body[0],
            keep_alive=keep_alive,
            http_version=self._parser.get_http_version(),
            by_name=by_name if len(by_name) == len(headers) else None,
        )

    def _head_without_upgrade(self) -> bytes:
        version = self._parser.get_http_version().encode()
        lines = [b"%s %s HTTP/%s\r\n" % (self._parser.get_method(), self._url, version)]
        for name, value in self._headers:
            if name not in (b"upgrade", b"connection", b"expect", b"http2-settings"):
                lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        return b"".join(lines)

    # answering
    def _enqueue(self, request: _Request) -> None:
        self._queue.append(request)
        if len(self._queue) > _MAX_QUEUED:
            self._pause_reading()
        if not self._busy:
            self._next()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _refuse(self, status: int, description: str, *extra: tuple[bytes, bytes]) -> None:
        """Queue this refusal behind the requests already read, and read no more requests."""
        self._refused = True
        self._in_message = False
        self._expect_continue = False
        answer = _refusal(status, description, *extra)
        request = _Request(b"", b"", b"", [], b"", keep_alive=False, refusal=answer)
        self._enqueue(request)

    @property
    def idle(self) -> bool:
        """Nothing to answer and no request begun: may be closed at once."""
        return not self._busy and not self._queue and not self._in_message

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def expire(self, now: float, keepalive: float) -> None:
        """Close the connection if it has waited too long (called about twice a second)."""
        if self._lingering:
            if now > self._linger_until or now - self.last_active > 1.0:
                self.close()
            return
        if self._waiting_for_writer and now - self.last_active > keepalive:
            if self._transport is not None:  # answers pile up and the client reads none
                self._transport.abort()
            return
        if self._busy or self._queue:
            return
        trickling = self._head_started is not None and now - self._head_started > keepalive
        overdue = self._in_message and now - self._message_started > self._shared.body_timeout
        if now - self.last_active <= keepalive and not trickling and not overdue:
            return
        if self._in_message:  # a request begun and never finished, or trickling in
            limit = self._shared.body_timeout if overdue else keepalive
            self._refuse(408, f"the request did not arrive within {limit:g}s")
        else:
            self.close()

    def _next(self) -> None:
        if self._writer_paused:
            self._busy = self._waiting_for_writer = True  # resume_writing goes on
            return
        if not self._queue:
            self._busy = False
            if self._eof:
                self.close()
                return
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            if self._expect_continue:
                self._send_continue()
            return
        self._busy = True
        request = self._queue.popleft()
        if request.refusal is not None:
            self.respond(request, *request.refusal)
            return
        if request.method == b"POST":
            fast, name = _predict_route(request.path)
            if fast:
                arrived = self._shared.arrived
                if not arrived and not self._shared.answer_after_parse:
                    self._loop.call_soon(_answer_arrived, self._shared)
                arrived.append((self, request, name))
                return
        self.answer_later(request, self._asgi(request))

    def respond(
        self, request: _Request, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Write one answer, then go on with the next queued request of this connection."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if request.keep_alive and self._shared.stopping and not self._queue:
            request.keep_alive = False  # read before the stop began: the last answer closes
        transport.write(
            _response(
                status, body, headers, request.keep_alive,
                http_10=request.http_version == "1.0", head=request.method == b"HEAD",
            )
        )  # fmt: skip
        self.last_active = time.monotonic()
        if request.keep_alive:
            self._next()
        elif self._refused and not self._eof and transport.can_write_eof():
            # The client may still be sending (a refused body): half-close and read it away
            # for a while, or it could see a reset instead of this answer.
            self._lingering = True
            self._linger_until = self.last_active + _LINGER_SECONDS
            self._queue.clear()
            transport.write_eof()
            if self._paused:
                self._paused = False
                transport.resume_reading()
        else:
            transport.close()

    def answer_later(self, request: _Request, answer: Awaitable[_Answer]) -> None:
        """Respond with ``answer`` once it is done (the ASGI app's, or the pipeline's)."""
        self._loop.create_task(self._answer(request, answer))

    async def _answer(self, request: _Request, answer: Awaitable[_Answer]) -> None:
        try:
            status, body, headers = await answer
        except Exception:
            log.exception("unexpected error answering %s", request.path.decode("latin-1"))
            status, body, headers = _refusal(500, "see the server log", path=request.path)
        self.respond(request, status, body, headers)

    async def _asgi(self, request: _Request) -> _Answer:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            # HEAD is GET without the body (RFC 9110 9.3.2); respond() leaves the body out.
            "method": "GET" if request.method == b"HEAD" else request.method.decode("latin-1"),
            "scheme": "http",
            "path": unquote_to_bytes(request.path).decode("utf-8", "replace"),
            "raw_path": request.path,
            "query_string": request.query,
            "root_path": "",
            "headers": request.headers,
            "client": self._peer,
            "server": self._local,
        }
        body_sent = False
        finished = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if body_sent:
                await finished.wait()
                return {"type": "http.disconnect"}
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}

        messages: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await self._shared.app(scope, receive, send)
        finished.set()
        starts = [m for m in messages if m["type"] == "http.response.start"] or [{"status": 500}]
        start: dict[str, Any] = starts[0]
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        return int(start["status"]), body, headers


def _answer_arrived(shared: _Shared) -> None:
    """Answer the predictions that arrived in this loop turn together (one onnxruntime call
    per version, Pipeline.predict_now); one that must wait goes on in a task."""
    arrived, shared.arrived = shared.arrived, []
    if not arrived:  # answered already
        return
    pipeline = shared.pipeline
    answers = pipeline.predict_now(
        [(name, request.header, request.body) for _, request, name in arrived]
    )
    for (connection, request, name), answer in zip(arrived, answers, strict=True):
        if answer is None:
            connection.answer_later(request, pipeline.predict(name, request.header, request.body))
        else:
            connection.respond(request, *answer)


def _predict_route(path: bytes) -> tuple[bool, str | None]:
    """(is it ``/predict`` or ``/models/{name}/predict``, the name)."""
    if path == _PREDICT:
        return True, None
    if path.startswith(_MODELS) and path.endswith(_PREDICT):
        middle = path[len(_MODELS) : -len(_PREDICT)]
        if middle and b"/" not in middle and b"%" not in middle:
            return True, middle.decode("latin-1")
    return False, None


def _expire(shared: _Shared) -> None:
    now = time.monotonic()
    for connection in list(shared.connections):
        connection.expire(now, shared.keepalive)


class HttpWorker(Worker):  # type: ignore[misc]
    """gunicorn worker class: ``server.worker.HttpWorker``."""

    def init_signals(self) -> None:
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def run(self) -> None:
        uvloop.run(self._serve())

    def _stop(self) -> None:
        self.alive = False

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self._stop)
        from server.app import ServerApp

        app = self.wsgi
        if not isinstance(app, ServerApp):
            log.error("server.worker.HttpWorker serves server.app:get_app() only, not %r", app)
            sys.exit(3)  # gunicorn's WORKER_BOOT_ERROR
        shared = _Shared(
            app=app,
            pipeline=app.pipeline,
            max_body_bytes=app.settings.max_body_bytes,
            keepalive=float(self.cfg.keepalive),
            body_timeout=app.settings.body_timeout_seconds,
            max_connections=int(self.cfg.worker_connections),
        )
        app.start()
        servers = [
            await loop.create_server(
                lambda: HttpProtocol(shared),
                sock=socket.fromfd(listener.fileno(), listener.FAMILY, socket.SOCK_STREAM),
                backlog=self.cfg.backlog,
            )
            for listener in self.sockets
        ]
        log.info("worker %s serving (fast HTTP worker)", os.getpid())
        ppid = self.ppid
        while self.alive:
            self.notify()
            if os.getppid() != ppid:
                log.warning("gunicorn master %s went away; stopping", ppid)
                break
            _expire(shared)
            await asyncio.sleep(0.5)

        shared.stopping = True
        for server in servers:
            server.close()
        log.info(
            "worker %s stopping: finishing the requests of %d open connection(s)",
            os.getpid(), len(shared.connections),
        )  # fmt: skip
        deadline = time.monotonic() + float(self.cfg.graceful_timeout)
        while shared.connections and time.monotonic() < deadline:
            for connection in list(shared.connections):
                if connection.idle:
                    connection.close()
            _expire(shared)
            await asyncio.sleep(0.05)
        for connection in list(shared.connections):
            connection.close()
        app.stop()
