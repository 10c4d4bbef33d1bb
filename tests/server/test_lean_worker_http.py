"""The lean worker's own HTTP/1.1 layer (server.worker.HttpWorker), in process: the worker built
as gunicorn builds it, serving a loopback socket from a thread (tests.server.roads), over raw
sockets. What both worker classes share is tests/server/test_contract.py's; the graceful stop of
a real gunicorn is tests/integration/test_server.py's.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.server.roads import (
    Raw,
    WorkerServer,
    app_from_env,
    http_request,
    read_reply,
    serving_worker,
)
from tests.server.volume import publish_version
from tests.support.metrics import sample_sum
from tests.support.onnx_models import write_mlp
from tests.support.waiting import wait_until

LIMIT = 20_000  # SERVER_MAX_BODY_BYTES of this server
KEEPALIVE = 2  # seconds (gunicorn --keep-alive)
BODY_TIMEOUT = 2  # SERVER_BODY_TIMEOUT_SECONDS
ROW = [float(i) / 16 for i in range(16)]
BODY = orjson.dumps({"data": ROW})
JSON = (("Content-Type", "application/json"),)


def request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    version: str = "1.1",
) -> bytes:
    """A request with a JSON body (for POST, PUT and PATCH, or any with a body)."""
    fields: dict[str, str] = {}
    if body or method in ("POST", "PUT", "PATCH"):
        fields["Content-Type"] = "application/json"
    fields |= headers or {}
    return http_request(method, path, body or None, list(fields.items()), version=version)


def _errors(text: str) -> float:
    return sample_sum(text, "server_requests_total", status="500")


@dataclass
class Served:
    server: WorkerServer
    errors_before: float

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, path: str, body: bytes) -> dict[str, object]:
        reply = self.server.request("POST", path, body, JSON)
        assert reply.status == 200, reply
        answer: dict[str, object] = reply.json()
        return answer

    def assert_same_worker(self) -> None:
        """The worker survived: still running, and a fresh connection gets an answer."""
        assert self.server.running, "the worker stopped"
        self.post("/predict", BODY)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("lean-worker-http")
    volume, models = root / "volume", root / "models"
    publish_version(volume, "tiny", "1", write_mlp(models / "tiny.onnx", seed=1).path)
    publish_version(volume, "clf", "7", write_mlp(models / "clf.onnx", seed=2).path)
    env = {
        "SERVER_VOLUME": str(volume),
        "SERVER_MAX_BODY_BYTES": str(LIMIT),
        "SERVER_DEFAULT_MODEL": "tiny",
        "SERVER_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    server = WorkerServer("lean-worker", app_from_env(env), keepalive=KEEPALIVE).start()
    try:
        before = _errors(server.request("GET", "/metrics").body.decode())
        yield Served(server, before)
        assert server.running, "the worker stopped"
        after = _errors(server.request("GET", "/metrics").body.decode())
        assert after == before, "some requests were answered 500"
    finally:
        server.stop()
        server.join()


# keep-alive and pipelining


def test_many_requests_on_one_keep_alive_connection(served: Served) -> None:
    with Raw(served.url) as raw:
        for index in range(60):
            if index % 3 == 2:
                raw.send(request("GET", "/v2/health/ready"))
            else:
                raw.send(request("POST", "/predict" if index % 3 else "/models/clf/predict", BODY))
            reply = raw.reply()
            assert reply.status == 200, reply
            assert "connection" not in reply.headers
        raw.send(request("POST", "/predict", BODY, headers={"Connection": "close"}))
        last = raw.reply()
        assert last.status == 200
        assert last.json()["model"] == "tiny"
        assert last.headers["connection"] == "close"
        assert raw.closed_by_server()


def test_connection_close_on_a_falcon_route(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(request("GET", "/v2/models/tiny", headers={"Connection": "close"}))
        reply = raw.reply()
        assert reply.status == 200
        assert reply.headers["connection"] == "close"
        assert raw.closed_by_server()


def test_http_1_0_closes_unless_it_asks_for_keep_alive(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(request("POST", "/predict", BODY, version="1.0"))
        assert raw.reply().status == 200
        assert raw.closed_by_server()
    with Raw(served.url) as raw:
        for _ in range(2):
            raw.send(
                request(
                    "POST", "/predict", BODY, version="1.0", headers={"Connection": "keep-alive"}
                )
            )
            reply = raw.reply()
            assert reply.status == 200
            # An HTTP/1.0 client keeps the connection only when the answer says so.
            assert reply.headers.get("connection", "").lower() == "keep-alive"


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    sequence = [
        (request("POST", "/predict", BODY), 200, b'"model":"tiny"'),
        (request("GET", "/v2/health/ready"), 200, b'"ready":true'),
        (request("POST", "/models/clf/predict", BODY), 200, b'"model":"clf"'),
        (request("POST", "/predict", b"{not json"), 400, b"not valid JSON"),
        (request("GET", "/v2/models/clf"), 200, b'"name":"clf"'),
        (request("POST", "/models/nope/predict", BODY), 404, b"nope"),
        (request("GET", "/metrics"), 200, b"server_requests_total"),
        (request("POST", "/predict?trace=1", BODY), 200, b'"model":"tiny"'),
    ] * 3
    with Raw(served.url) as raw:
        raw.send(b"".join(data for data, _, _ in sequence))
        for index, (_, status, words) in enumerate(sequence):
            reply = raw.reply()
            assert (index, reply.status) == (index, status), reply
            assert words in reply.body, (index, reply)


def test_pipelined_request_then_garbage_answers_both_in_order(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(request("POST", "/predict", BODY) + b"GARBAGE\x01 nonsense\r\n\r\n")
        assert raw.reply().status == 200
        bad = raw.reply()
        assert bad.status == 400, bad
        assert raw.closed_by_server()
    served.assert_same_worker()


# request bodies


def test_chunked_bodies(served: Served) -> None:
    pieces = [BODY[:1], BODY[1:10], BODY[10:]]
    chunked = (
        b"".join(b"%x;note=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    plain = served.post("/predict", BODY)
    v2 = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]}
    )
    v2_chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(v2), v2)
    with Raw(served.url) as raw:
        head = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw.send(f"POST /predict HTTP/1.1\r\nHost: t\r\n{head}".encode() + chunked)
        raw.send(f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: t\r\n{head}".encode() + v2_chunked)
        first = raw.reply()
        assert first.status == 200, first
        assert first.json() == plain
        second = raw.reply()
        assert second.status == 200, second
        assert second.json()["outputs"][0]["data"] == plain["prediction"]


@pytest.mark.parametrize("path", ["/predict", "/v2/models/tiny/infer"])
def test_content_length_over_the_limit_is_413_before_the_body(served: Served, path: str) -> None:
    with Raw(served.url) as raw:
        # Only the head (and a little body): the answer must not wait for 10 MB.
        raw.send(request("POST", path, b"", headers={"Content-Length": str(10_000_000)}))
        raw.send(b"[" * 1000)
        reply = raw.reply()
        assert reply.status == 413, reply
        body = reply.json()
        assert str(LIMIT) in (body["error"] if path.startswith("/v2/") else body["description"])
        assert reply.headers["connection"] == "close"
        # The rest of the body may keep coming; the server reads it away and closes.
        raw.send(b"0" * 200_000)
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_a_client_still_sending_a_refused_body_gets_the_answer(served: Served) -> None:
    """Like most clients, write the whole too-large body, then read: the 413 must be there
    (a server that closes at once makes the kernel reset the connection and drop it)."""
    with Raw(served.url) as raw:
        head = request("POST", "/predict", b"", headers={"Content-Length": str(4_000_000)})
        raw.send(head + b"1" * 4_000_000)
        reply = raw.reply()
        assert reply.status == 413, reply
        assert raw.closed_by_server()
    served.assert_same_worker()


@pytest.mark.parametrize("path", ["/predict", "/v2/models/tiny/infer"])
def test_chunked_body_over_the_limit_is_413(served: Served, path: str) -> None:
    with Raw(served.url) as raw:
        raw.send(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
        for _ in range(LIMIT // 4096 + 2):  # past the limit, and no last chunk yet
            raw.send(chunk)
        reply = raw.reply()
        assert reply.status == 413, reply
        assert reply.headers["connection"] == "close"
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_expect_100_continue(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(
            request(
                "POST",
                "/predict",
                b"",
                headers={"Content-Length": str(len(BODY)), "Expect": "100-continue"},
            )
        )
        interim = raw.reply()
        assert interim.status == 100
        raw.send(BODY)
        reply = raw.reply()
        assert reply.status == 200, reply
        assert reply.json()["model"] == "tiny"
        # Too large: a final 413 instead of 100, and the body is never asked for.
        too_big = {"Content-Length": str(LIMIT + 1), "Expect": "100-Continue"}
        raw.send(request("POST", "/predict", b"", headers=too_big))
        refused = raw.reply()
        assert refused.status == 413, refused
        assert raw.closed_by_server()


# malformed input


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="request-line"),
        pytest.param(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, id="tls-hello"
        ),
        pytest.param(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nX\x01Y: 1\r\n\r\n", id="header-control-char"),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nContent-Length: abc\r\n\r\n", id="length-not-a-number"
        ),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            id="length-and-chunked",
        ),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"
        ),
        pytest.param(b"GET / HTTP/9.9\r\n\r\n", id="version"),
    ],
)
def test_malformed_http_is_400_and_the_worker_survives(served: Served, data: bytes) -> None:
    with Raw(served.url) as raw:
        raw.send(data)
        reply = raw.reply()
        assert reply.status == 400, reply
        assert reply.json()["title"]
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_huge_headers_are_refused(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n")
        for index in range(200):  # 200 x 1 KB headers, never ending
            raw.send(b"X-Filler-%d: %s\r\n" % (index, b"a" * 1024))
        reply = raw.reply()
        assert reply.status == 431, reply
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_a_header_value_without_an_end_is_refused(served: Served) -> None:
    """httptools hands a header over when its value ends: one that never ends was read on for
    2,000 MiB (a hostile tester's), the worker at 600 MB and 100 % CPU, other requests stalled."""
    with Raw(served.url) as raw:
        raw.send(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Big: ")
        for _ in range(
            64
        ):  # 4 MiB, never ending; the refusal comes within the first 64 KiB + a read
            try:
                raw.send(b"a" * 65536)
            except OSError:  # refused and closed while sending
                break
        reply = raw.reply()
        assert reply.status == 431, reply
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_a_head_of_many_short_headers_counts_its_framing(served: Served) -> None:
    """40,000 "a:" headers made a 160 KB head of 40,000 tuples scanned per lookup (a tester's):
    the limit counts each header's ": " and CRLF too."""
    with Raw(served.url) as raw:
        raw.send(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n" + b"a:\r\n" * 40_000 + b"\r\n")
        reply = raw.reply()
        assert reply.status == 431, reply
    served.assert_same_worker()


def test_a_first_read_of_an_endless_header_is_counted(served: Served) -> None:
    """The read a head begins in counts: 130 KB of one header value in one send was held."""
    with Raw(served.url) as raw:
        raw.send(b"POST /predict HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 130_000)
        reply = raw.reply()
        assert reply.status == 431, reply
    served.assert_same_worker()


def test_pipelined_requests_past_the_head_limit_together_are_no_431(served: Served) -> None:
    """Only one head counts against the limit, however many requests one read holds."""
    one = request("POST", "/predict", BODY, headers={"X-Pad": "p" * 2000})
    with Raw(served.url) as raw:
        raw.send(one * 60)  # 60 requests, about 130 KB at once
        for _ in range(60):
            reply = raw.reply()
            assert reply.status == 200, reply


def test_connections_beyond_worker_connections_are_closed_at_once(tmp_path: Path) -> None:
    """21,000 idle sockets once ran the worker out of descriptors (the volume watcher logged
    EMFILE and could miss a swap): past gunicorn's worker_connections each is closed."""
    volume = tmp_path / "volume"
    publish_version(volume, "tiny", "1", write_mlp(tmp_path / "tiny.onnx", seed=1).path)
    app = app_from_env({"SERVER_VOLUME": str(volume)})
    live = http_request("GET", "/v2/health/live")
    options = {"settings": {"worker_connections": "3"}, "keepalive": 60}  # idle ones stay
    with serving_worker("lean-worker", app, **options) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
        try:
            for sock in held:  # each accepted: answered, and kept open
                sock.sendall(live)
                assert read_reply(sock)[0].status == 200
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as beyond:
                assert beyond.recv(1) == b""  # closed by the server, unanswered
            held.pop().close()

            def served_again() -> bool:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    sock.sendall(live)
                    try:
                        return read_reply(sock)[0].status == 200
                    except (OSError, EOFError, ValueError):  # closed (refused) before an answer
                        return False

            wait_until(served_again, timeout=10, what="a connection served once one closed")
        finally:
            for sock in held:
                sock.close()


DEEP = b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
NESTED = b'{"data": ' + b"[" * 60 + b"1" + b"]" * 60 + b"}"
BAD_BODIES: list[tuple[str, bytes, str | None, int]] = [
    ("invalid-json", b'{"data": [1, 2', "application/json", 400),
    ("text-plain", BODY, "text/plain", 415),
    ("no-content-type", BODY, None, 415),
    ("form", b"data=1", "application/x-www-form-urlencoded", 415),
    ("empty", b"", "application/json", 400),
    ("data-string", b'{"data": "x"}', "application/json", 400),
    ("data-null", b'{"data": null}', "application/json", 400),
    ("ragged", b'{"data": [[1, 2], [3]]}', "application/json", 400),
    ("ragged-deep", b'{"data": [[[1], [2, 3]], [[4]]]}', "application/json", 400),
    ("nan", b'{"data": [NaN]}', "application/json", 400),
    ("infinity", b'{"data": [Infinity, -Infinity]}', "application/json", 400),
    ("huge-float", b'{"data": [1e999]}', "application/json", 400),
    ("huge-int", b'{"data": [' + b"9" * 400 + b"]}", "application/json", 400),
    ("deep-json", DEEP, "application/json", 400),
    ("deep-array", NESTED, "application/json", 400),
    ("not-utf8", b'{"data": ["\xff"]}', "application/json", 400),
    ("nulls", b'{"data": [null, null]}', "application/json", 400),
    ("strings", b'{"data": ' + orjson.dumps(["a"] * 16) + b"}", "application/json", 400),
    ("object-rows", b'{"data": [{"a": 1}]}', "application/json", 400),
]


@pytest.mark.parametrize("path", ["/predict", "/models/tiny/predict"])
def test_bad_bodies_get_a_4xx_that_says_why(served: Served, path: str) -> None:
    with Raw(served.url) as raw:
        for case, body, content_type, status in BAD_BODIES:
            headers = {"Content-Length": str(len(body))}
            if content_type:
                headers["Content-Type"] = content_type
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            raw.send(f"POST {path} HTTP/1.1\r\nHost: t\r\n{head}\r\n".encode() + body)
            reply = raw.reply()
            assert reply.status == status, (case, reply)
            payload = reply.json()
            assert set(payload) == {"title", "description"}, (case, payload)
            assert payload["description"], case
    served.assert_same_worker()


# methods, paths, query strings


@pytest.mark.parametrize("path", ["/predict", "/models/tiny/predict"])
def test_other_methods_on_the_predict_routes(served: Served, path: str) -> None:
    with Raw(served.url) as raw:
        raw.send(request("HEAD", path))
        head = raw.reply(head=True)
        assert head.status == 405, head
        assert "POST" in head.headers["allow"]
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            raw.send(request(method, path, BODY if method != "GET" else b""))
            reply = raw.reply()
            assert reply.status == 405, (method, reply)
            assert "POST" in reply.headers["allow"], method
        # the connection is still in step after the body-less HEAD answer
        raw.send(request("POST", path, BODY))
        assert raw.reply().json()["model"] == "tiny"
        raw.send(request("BREW", path, BODY))
        unknown = raw.reply()
        assert unknown.status == 501, unknown
        assert raw.closed_by_server()
    served.assert_same_worker()


def test_head_of_a_get_route_is_its_head(served: Served) -> None:
    with Raw(served.url) as raw:
        raw.send(request("GET", "/v2/models/tiny"))
        got = raw.reply()
        raw.send(request("HEAD", "/v2/models/tiny"))
        head = raw.reply(head=True)
        assert head.status == 200, head
        assert head.headers["content-length"] == str(len(got.body))
        raw.send(request("GET", "/v2/health/live"))  # no stray body before this answer
        assert raw.reply().status == 200


def test_upgrade_requests_are_answered_over_http_1_1(served: Served) -> None:
    """h2c (what ``curl --http2`` sends to an http:// URL, body included) and websocket."""
    h2c = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABk"}
    websocket = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    with Raw(served.url) as raw:
        raw.send(request("POST", "/predict", BODY, headers=h2c))
        answer = raw.reply()
        assert answer.status == 200, answer
        assert answer.json()["model"] == "tiny"
        raw.send(
            request("GET", "/v2/health/ready", headers=websocket)
            + request("POST", "/predict", BODY)
        )
        assert raw.reply().status == 200
        assert raw.reply().json()["model"] == "tiny"


def test_query_strings_encoded_names_and_absolute_urls(served: Served) -> None:
    cases = [
        ("/predict?verbose=1&x=%20", 200, "tiny"),
        ("/models/tiny/predict?", 200, "tiny"),
        ("/models/ti%6Ey/predict", 200, "tiny"),
        ("/models/%63lf/predict?a=b", 200, "clf"),
        ("http://test/predict", 200, "tiny"),
        ("http://test:80/models/clf/predict?q", 200, "clf"),
        ("/models/nope/predict", 404, "'nope'"),
        ("/models/no%20pe/predict", 404, "'no pe'"),
        ("/models/%C3%A9t%C3%A9/predict", 404, "'\u00e9t\u00e9'"),
        ("/models/%ZZ/predict", 404, "%ZZ"),
        ("/models/a%2Fb/predict", 404, None),
    ]
    with Raw(served.url) as raw:
        for path, status, words in cases:
            raw.send(request("POST", path, BODY))
            reply = raw.reply()
            assert reply.status == status, (path, reply)
            if status == 200:
                assert reply.json()["model"] == words, path
                assert reply.headers["x-model-version"] in {"1", "7"}
            elif words is not None:
                assert words in reply.json()["description"], (path, reply)
    served.assert_same_worker()


# slow and idle clients


def test_a_stalled_client_blocks_no_one_and_idle_connections_close(served: Served) -> None:
    url = served.url
    with Raw(url) as stalled, Raw(url) as idle, Raw(url) as busy:
        stalled.send(request("POST", "/predict", BODY)[: -len(BODY) // 2])  # half a request
        idle.send(request("GET", "/v2/health/live"))
        assert idle.reply().status == 200
        for _ in range(20):
            busy.send(request("POST", "/predict", BODY))
            assert busy.reply().status == 200
        # Both are closed once the keep-alive timeout passes without traffic (socket timeout
        # 20 s >> KEEPALIVE): wait for the close.
        assert idle.closed_by_server()
        assert stalled.closed_by_server()
        assert not stalled.buffer or stalled.buffer.startswith(b"HTTP/1.1 408"), stalled.buffer
    served.assert_same_worker()


def test_a_request_head_trickling_in_is_cut_off(served: Served) -> None:
    """A client that sends its head a byte at a time (slowloris) gets a 408 and is closed."""
    data = request("POST", "/predict", BODY)
    with Raw(served.url) as raw:
        for index in range(len(data) - len(BODY)):
            try:
                raw.send(data[index : index + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            if raw.closed_by_server_within(0.2):
                break
        else:
            pytest.fail("the whole head trickled in and the connection is still open")
        assert raw.buffer.startswith(b"HTTP/1.1 408"), raw.buffer


# a trickled body and large bodies (were against a real gunicorn, tests/integration)


def test_a_trickled_body_meets_an_overall_deadline(served: Served) -> None:
    """One byte every 0.3 s keeps the connection active: only an overall deadline ends it."""
    stop = threading.Event()
    with Raw(served.url, timeout=BODY_TIMEOUT + 30) as raw:
        raw.send(request("POST", "/predict", b"", headers={"Content-Length": "1000"}))

        def trickle() -> None:
            while not stop.wait(0.3):
                try:
                    raw.send(b" ")
                except OSError:
                    return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            reply = raw.reply()
        finally:
            stop.set()
            thread.join(5)
    assert reply.status == 408, reply
    assert f"within {BODY_TIMEOUT}s" in reply.json()["description"]


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerServer]:
    """The lean worker with the default body limit (8 MiB)."""
    root = tmp_path_factory.mktemp("lean-worker-roomy")
    volume = root / "volume"
    publish_version(volume, "tiny", "1", write_mlp(root / "tiny.onnx", seed=1).path)
    server = WorkerServer("lean-worker", app_from_env({"SERVER_VOLUME": str(volume)})).start()
    yield server
    server.stop()
    server.join()


def test_large_bodies_are_decoded_off_the_event_loop(roomy: WorkerServer) -> None:
    """Four bodies near the 8 MB limit at once: a health probe sent after them is answered
    before any of them (they used to be decoded on the event loop, the probe waiting behind)."""
    body = orjson.dumps({"data": [[0.123456] * 16] * 50_000})
    assert 6_000_000 < len(body) < 8 << 20
    head = request("POST", "/models/tiny/predict", b"", headers={"Content-Length": str(len(body))})
    big = [socket.create_connection(("127.0.0.1", roomy.port), timeout=120) for _ in range(4)]
    probe = socket.create_connection(("127.0.0.1", roomy.port), timeout=120)
    try:
        senders = [threading.Thread(target=s.sendall, args=(head + body,)) for s in big]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        probe.sendall(request("GET", "/v2/health/live"))
        order: list[str] = []
        pending = {probe: "probe", **{s: f"big-{i}" for i, s in enumerate(big)}}
        heads: dict[socket.socket, bytes] = {}
        while pending:
            readable, _, _ = select.select(list(pending), [], [], 120)
            assert readable, f"no answer from {sorted(pending.values())}"
            for sock in readable:
                chunk = sock.recv(65536)
                assert chunk, f"{pending[sock]} closed without an answer"
                heads[sock] = heads.get(sock, b"") + chunk
                if b"\r\n\r\n" in heads[sock]:
                    assert heads[sock].startswith(b"HTTP/1.1 200 "), heads[sock][:200]
                    order.append(pending.pop(sock))
        assert order[0] == "probe", order
    finally:
        for sock in [*big, probe]:
            sock.close()
