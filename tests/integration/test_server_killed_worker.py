"""A worker killed in the middle of an answer never looks like a complete 200 (issue 13).

The server frames every answer with Content-Length, so a body cut short is detectable: a real
gunicorn server (one worker, each worker class) starts a 10 MB answer to two clients that stop
reading after the headers (a raw socket and httpx), its worker is SIGKILLed while it waits for
them to read, and each client sees the cut: fewer bytes than Content-Length then a close, an
error from httpx. The master forks a new worker and the next request is a whole 200.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.server.harness import ServerProcess, running_server
from tests.server.roads import WORKER_ROADS, http_request, read_head
from tests.server.volume import publish_version
from tests.support.onnx_models import expands
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

WIDTH = 1_000_000
"""Values in the answer: 10 bytes each in JSON (``1.2345678,``), a 10 MB body, more than the
socket buffers between the worker and a client that does not read (4 MB + 128 KB here)."""
REQUEST = orjson.dumps({"data": [[1.2345678]]})
JSON = {"Content-Type": "application/json"}
RECEIVE_BUFFER = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)]
"""Fixed client receive buffers: Linux would grow an unread one towards tcp_rmem's maximum."""
PATIENCE = 30.0
"""Seconds a client waits for the server's bytes or its close before the test fails."""


@pytest.fixture(scope="module", params=list(WORKER_ROADS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("killed-worker")
    publish_version(root / "volume", "big", "1", expands(root / "big.onnx", width=WIDTH))
    env = {"SERVER_WORKER_CLASS": WORKER_ROADS[request.param]}
    with running_server(root / "volume", root, workers=1, env=env) as running:
        wait_until(lambda: _ready(running), what="the big model served")
        yield running


def _ready(server: ServerProcess) -> bool:
    return httpx.get(f"{server.url}/v2/models/big/ready", timeout=5).status_code == 200


def _raw_client(server: ServerProcess) -> socket.socket:
    """A connection that has sent the request and read only the status line and headers."""
    port = int(server.url.rpartition(":")[2])
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for option in RECEIVE_BUFFER:
        connection.setsockopt(*option)
    connection.settimeout(PATIENCE)
    connection.connect(("127.0.0.1", port))
    connection.sendall(http_request("POST", "/models/big/predict", REQUEST, tuple(JSON.items())))
    return connection


def _until_closed(connection: socket.socket) -> bytes:
    """Every byte the server still sends, until it closes (or resets) the connection."""
    received = bytearray()
    try:
        while chunk := connection.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open {PATIENCE:.0f}s after its worker died")
    return bytes(received)


def test_a_worker_killed_mid_answer_cuts_the_body_short_and_the_master_serves_again(
    server: ServerProcess,
) -> None:
    transport = httpx.HTTPTransport(socket_options=RECEIVE_BUFFER)
    with (
        _raw_client(server) as raw,
        httpx.Client(transport=transport, timeout=PATIENCE) as client,
        client.stream(
            "POST", f"{server.url}/models/big/predict", content=REQUEST, headers=JSON
        ) as streamed,
    ):
        status, headers, early = read_head(raw)
        assert (status, streamed.status_code) == (200, 200)
        length = int(headers["content-length"])
        assert int(streamed.headers["content-length"]) == length > 10 * WIDTH
        worker = server.worker_holding(raw)
        stream = streamed.extensions["network_stream"]
        assert server.worker_holding(stream.get_extra_info("socket")) == worker

        os.kill(worker, signal.SIGKILL)

        body = early + _until_closed(raw)
        assert len(body) < length, "a killed worker's answer arrived whole"
        with pytest.raises(httpx.TransportError) as caught:  # not a response, short or whole
            streamed.read()
        assert isinstance(caught.value, httpx.RemoteProtocolError | httpx.ReadError)

    assert server.process.is_running(), "the master died with its worker"
    wait_until(
        lambda: server.workers() and worker not in server.workers(),
        timeout=PATIENCE,
        what="the master forking a new worker",
    )
    wait_until(lambda: _ready(server), timeout=PATIENCE, what="the new worker serving big")
    answer = httpx.post(f"{server.url}/models/big/predict", content=REQUEST, headers=JSON)
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.content) == int(answer.headers["content-length"])
    assert orjson.loads(answer.content)["prediction"] == [[1.2345678] * WIDTH]
