"""Fuzzing the lean worker's request parsing (server.worker.HttpProtocol) in process.

Each example is the bytes one client sends on one connection (a request built from parts, then
mutated, cut, repeated or followed by junk), fed in random chunks, then the client's end of
input. The property: what the worker writes parses as well-formed HTTP/1.1 answers (interim 100
Continue aside; HEAD is left out: a response parser cannot know an answer had no body), at
most one final answer per request the input holds, never a traceback in the
log; and a well-formed request alone gets exactly one answer. Bounded to about a minute.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httptools
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import ServerApp
from server.worker import HttpProtocol, _Shared
from tests.server.roads import app_from_env
from tests.server.volume import publish_version
from tests.support.onnx_models import write_mlp
from tests.support.transport import FakeTransport

ROW = b"[" + b",".join(b"0.5" for _ in range(16)) + b"]"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> ServerApp:
    root = tmp_path_factory.mktemp("fuzz")
    volume = root / "volume"
    publish_version(volume, "tiny", "1", write_mlp(root / "tiny.onnx", seed=1).path)
    app: ServerApp = app_from_env({"SERVER_VOLUME": str(volume), "SERVER_MAX_BODY_BYTES": "4096"})
    return app


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _converse(app: ServerApp, chunks: list[bytes]) -> FakeTransport:
    shared = _Shared(app=app, pipeline=app.pipeline, max_body_bytes=4096, keepalive=5.0)
    protocol = HttpProtocol(shared)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for chunk in chunks:
        if transport.closed or transport.eof_written:
            break
        protocol.data_received(chunk)
        await asyncio.sleep(0)
    if not transport.closed:
        keep = protocol.eof_received()
        if not keep:
            transport.close()
    for _ in range(500):  # let queued answers (ASGI tasks, threads) finish
        waiting_for_input = not protocol._busy and not protocol._queue  # a request cut short
        if transport.closed or transport.eof_written or waiting_for_input:
            break
        await asyncio.sleep(0.001)
    protocol.connection_lost(None)
    return transport


class _Answers:
    """httptools' response parser over what the worker wrote."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.complete = 0
        self._parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.complete += 1
        self.statuses.append(self._parser.get_status_code())

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


def _answers(data: bytes) -> _Answers:
    answers = _Answers()
    if data:
        answers.feed(data)  # raises on anything that is not well-formed HTTP/1.x
    return answers


METHODS = st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"BREW", b"", b"G\x00T"])
PATHS = st.sampled_from(
    [b"/predict", b"/models/tiny/predict", b"/models/nope/predict", b"/v2/models/tiny/infer",
     b"/v2/health/ready", b"/v2", b"/metrics", b"*", b"http://x/predict", b"/%ZZ", b"",
     b"/models/tiny/predict?x=1", b"/" + b"a" * 300]
)  # fmt: skip
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"", b"HTTP/1.x"])
HEADERS = st.lists(
    st.sampled_from(
        [b"Content-Type: application/json", b"Content-Type: application/jsonx",
         b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999",
         b"Content-Length: abc", b"Transfer-Encoding: chunked", b"Expect: 100-continue",
         b"Connection: close", b"Connection: keep-alive", b"Authorization: bearer x",
         b"Upgrade: h2c", b"Host: x", b"X: \xff\xfe", b"Bad Header", b": empty"]
    ),
    max_size=6,
)  # fmt: skip
BODIES = st.sampled_from(
    [b"", b'{"data": ' + ROW + b"}", b'{"data": [1e300]}', b"{", b"5\r\nhello\r\n0\r\n\r\n",
     b'{"inputs": [{"name": "input", "shape": [true, 16], "data": []}]}', b"\x00" * 10]
)  # fmt: skip


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[bytes], int, bool]:
    """(chunks, how many request lines the input holds, whether it is one well-formed request)"""
    requests = draw(st.integers(min_value=1, max_value=3))
    parts: list[bytes] = []
    well_formed = requests == 1
    for _ in range(requests):
        method, path, version = draw(METHODS), draw(PATHS), draw(VERSIONS)
        headers, body = draw(HEADERS), draw(BODIES)
        sized = [h for h in headers if not h.lower().startswith((b"content-length", b"transfer"))]
        if draw(st.booleans()):  # a correct length, most of the time
            headers = [*sized, b"Content-Length: %d" % len(body)]
        else:
            well_formed = False
        head = b"%s %s %s\r\n" % (method, path, version) + b"".join(h + b"\r\n" for h in headers)
        request = head + b"\r\n" + body
        if draw(st.booleans()):
            well_formed = False
            cut = draw(st.integers(min_value=0, max_value=len(request)))
            request = request[:cut] + draw(st.binary(max_size=20)) + request[cut:]
        parts.append(request)
        if method not in {b"GET", b"POST"} or version not in {b"HTTP/1.1", b"HTTP/1.0"}:
            well_formed = False
        if any(h in headers for h in (b"Bad Header", b": empty", b"Upgrade: h2c")):
            well_formed = False
        if b"Expect: 100-continue" in headers or b"Transfer-Encoding: chunked" in headers:
            well_formed = False
        if b"Content-Length: 99999999" in headers or path in {b"", b"*"}:
            well_formed = False
    data = b"".join(parts)
    sizes = draw(st.lists(st.integers(min_value=1, max_value=64), max_size=8))
    chunks, offset = [], 0
    for size in sizes:
        chunks.append(data[offset : offset + size])
        offset += size
    chunks.append(data[offset:])
    return [chunk for chunk in chunks if chunk], data.count(b"\r\n\r\n") + 1, well_formed


@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(conversation=conversations())
def test_every_input_gets_well_formed_answers_and_never_a_traceback(
    app: ServerApp, conversation: tuple[list[bytes], int, bool]
) -> None:
    chunks, most, well_formed = conversation
    errors = _Errors()
    root = logging.getLogger()
    root.addHandler(errors)
    try:
        transport = asyncio.run(_converse(app, chunks))
    finally:
        root.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    answers = _answers(bytes(transport.written))
    final = [status for status in answers.statuses if status >= 200]
    assert all(200 <= status < 600 for status in final), answers.statuses
    assert 500 not in final, (chunks, bytes(transport.written)[:300])
    assert len(final) <= most, (chunks, answers.statuses)
    if well_formed:
        assert len(final) == 1, (chunks, bytes(transport.written)[:300])


@pytest.mark.parametrize(
    "line", [b"GET /v2/health/live HTTP/0.9", b"GET /v2/health/live HTTP/2.0",
             b"GET /v2/health/live", b"POST /predict HTTP/3.0"]
)  # fmt: skip
def test_request_lines_without_http_1x_get_400_or_505(app: ServerApp, line: bytes) -> None:
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    try:
        transport = asyncio.run(_converse(app, [line + b"\r\nHost: x\r\n\r\n"]))
    finally:
        logging.getLogger().removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
    answers = _answers(bytes(transport.written))
    assert answers.statuses in ([400], [505]), bytes(transport.written)


def test_a_conversation_answers_each_request_once(app: ServerApp, tmp_path: Path) -> None:
    """The harness itself: two pipelined predictions get two 200s."""
    body = b'{"data": ' + ROW + b"}"
    one = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    transport = asyncio.run(_converse(app, [one + one]))
    assert _answers(bytes(transport.written)).statuses == [200, 200]
