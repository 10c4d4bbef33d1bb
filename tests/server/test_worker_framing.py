"""HTTP/1.1 framing both gunicorn worker classes must get right, in process on loopback sockets:
keep-alive, pipelining, chunked bodies, the body limit before the body, HTTP/1.0, 100-continue.

The lean worker's own refinements (lingering close, 501, timeouts, malformed input) are
tests/server/test_lean_worker_http.py's.
"""

from __future__ import annotations

import pytest

from tests.server.contract import JSON, LIMIT, ROW, Servers, predict_body, v2_body
from tests.server.roads import WORKER_ROADS, Raw, http_request

PREDICT = "/models/tiny/predict"
BODY = predict_body(ROW)


def _chunked(path: str, body: bytes, pieces: int = 3) -> bytes:
    size = -(-len(body) // pieces)
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


@pytest.fixture(params=list(WORKER_ROADS))
def url(request: pytest.FixtureRequest, servers: Servers) -> str:
    road = servers.road("main", request.param)
    return str(road.url)


def test_many_requests_on_one_keep_alive_connection(url: str) -> None:
    with Raw(url) as raw:
        for index in range(30):
            if index % 3 == 2:
                raw.send(http_request("GET", "/v2/health/ready"))
            else:
                raw.send(http_request("POST", PREDICT, BODY, JSON))
            reply = raw.reply()
            assert reply.status == 200, reply
            assert reply.headers.get("connection", "keep-alive") != "close"
        raw.send(http_request("POST", PREDICT, BODY, (*JSON, ("Connection", "close"))))
        last = raw.reply()
        assert last.status == 200
        assert last.headers["connection"] == "close"
        assert raw.closed_by_server()


def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    sequence = [
        (http_request("POST", PREDICT, BODY, JSON), 200, b'"model":"tiny"'),
        (http_request("GET", "/v2/health/ready"), 200, b'"ready":true'),
        (http_request("POST", "/models/clf/predict", BODY, JSON), 200, b'"model":"clf"'),
        (http_request("POST", PREDICT, b"{not json", JSON), 400, b"not valid JSON"),
        (http_request("GET", "/v2/models/clf"), 200, b'"name":"clf"'),
        (http_request("POST", "/models/nope/predict", BODY, JSON), 404, b"nope"),
        (http_request("POST", "/v2/models/tiny/infer", v2_body(), JSON), 200, b'"outputs"'),
        (http_request("GET", "/metrics"), 200, b"server_requests_total"),
    ] * 3
    with Raw(url) as raw:
        raw.send(b"".join(data for data, _, _ in sequence))
        for index, (_, status, words) in enumerate(sequence):
            reply = raw.reply()
            assert (index, reply.status) == (index, status), reply
            assert words in reply.body, (index, reply)


@pytest.mark.parametrize("path", [PREDICT, "/v2/models/tiny/infer"])
def test_a_chunked_body_is_the_same_request(url: str, path: str) -> None:
    body = BODY if path == PREDICT else v2_body()
    with Raw(url) as raw:
        raw.send(http_request("POST", path, body, JSON))
        plain = raw.reply()
        raw.send(_chunked(path, body))
        chunked = raw.reply()
    assert (plain.status, chunked.status) == (200, 200), (plain, chunked)
    assert chunked.body == plain.body


@pytest.mark.parametrize("path", [PREDICT, "/v2/models/tiny/infer"])
def test_a_length_over_the_limit_is_413_before_the_rest_of_the_body(url: str, path: str) -> None:
    with Raw(url) as raw:  # the head and a first piece: the answer must not wait for 10 MB
        raw.send(http_request("POST", path, None, (*JSON, ("Content-Length", "10000000"))))
        raw.send(b"[" * 1000)
        reply = raw.reply()
    assert reply.status == 413, reply
    assert str(LIMIT) in reply.body.decode()


FIRST_EVENT = (
    "under uvicorn, Falcon's ASGI app awaits the first http.request event before routing, and "
    "uvicorn answers Expect: 100-continue as soon as the app receives: a client announcing a "
    "body over the limit is told to send it (100 Continue), then refused (413); the lean worker "
    "refuses it on the head. (Without Expect, a head alone over the limit waits under uvicorn "
    "until body bytes arrive.)"
)


@pytest.mark.parametrize(
    "url",
    [
        "lean-worker",
        pytest.param("uvicorn-worker", marks=pytest.mark.xfail(strict=True, reason=FIRST_EVENT)),
    ],
    indirect=True,
)
def test_expect_100_continue_over_the_limit_is_413_not_100(url: str) -> None:
    with Raw(url) as raw:
        too_big = (*JSON, ("Content-Length", str(LIMIT + 1)), ("Expect", "100-continue"))
        raw.send(http_request("POST", PREDICT, None, too_big))
        refused = raw.reply()
    assert refused.status == 413, refused


@pytest.mark.parametrize("path", [PREDICT, "/v2/models/tiny/infer"])
def test_a_chunked_body_over_the_limit_is_413(url: str, path: str) -> None:
    with Raw(url) as raw:
        raw.send(_chunked(path, b" " * (LIMIT + 4096), pieces=(LIMIT // 4096) + 2))
        reply = raw.reply()
    assert reply.status == 413, reply
    assert str(LIMIT) in reply.body.decode()


def test_http_1_0_is_answered_then_closed(url: str) -> None:
    with Raw(url) as raw:
        raw.send(http_request("POST", PREDICT, BODY, JSON, version="1.0"))
        reply = raw.reply()
        assert reply.status == 200, reply
        assert b'"model":"tiny"' in reply.body
        assert raw.closed_by_server()


@pytest.mark.parametrize(
    "line", [b"GET /v2/health/live", b"GET /v2/health/live HTTP/0.9"], ids=["none", "0.9"]
)
def test_a_request_line_without_http_1x_is_400(url: str, line: bytes) -> None:
    """uvicorn hands such a request on to the app, where Falcon answered 500 (a tester's)."""
    with Raw(url) as raw:
        raw.send(line + b"\r\nHost: x\r\n\r\n")
        reply = raw.reply()
        assert reply.status == 400, reply
        assert b"is not HTTP/1.x" in reply.body


def test_expect_100_continue(url: str) -> None:
    with Raw(url) as raw:
        head = http_request(
            "POST", PREDICT, None,
            (*JSON, ("Content-Length", str(len(BODY))), ("Expect", "100-continue")),
        )  # fmt: skip
        raw.send(head)
        interim = raw.reply()
        assert interim.status == 100, interim
        raw.send(BODY)
        reply = raw.reply()
        assert reply.status == 200, reply
        assert reply.json()["model"] == "tiny"
