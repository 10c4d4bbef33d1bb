"""Hostile and careless clients against a real gunicorn server (issue: nothing escapes, nothing
leaks, nothing grows without bound). Each test failed on the code before its fix."""

from __future__ import annotations

import select
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.server.harness import ServerProcess, running_server
from tests.server.volume import publish_version
from tests.support.onnx_models import sha256_of, write_mlp
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROW = [0.25] * 16
TOKEN = "s3cret-token"
BODY_TIMEOUT = 2


@dataclass
class Hostile:
    server: ServerProcess
    volume: Path
    broken_sha: str


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """No auth (the default): ``tiny`` serves; ``broken`` has a manifest whose sha256 lies."""
    root = tmp_path_factory.mktemp("hostile")
    volume = root / "volume"
    tiny = write_mlp(root / "tiny.onnx", seed=1)
    publish_version(volume, "tiny", "1", tiny.path)
    publish_version(volume, "broken", "1", tiny.path, sha256="e" * 64)
    env = {"SERVER_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "SERVER_DEFAULT_MODEL": "tiny"}
    with running_server(volume, root, workers=1, env=env) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/models/tiny/ready").status_code == 200,
            what="tiny served",
        )
        yield Hostile(server, volume, sha256_of(tiny.path))


def _v2(shape: object, data: object, datatype: str = "FP32") -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


def test_unknown_model_names_share_one_metrics_label(hostile: Hostile) -> None:
    url = hostile.server.url
    names = [f"rand-{uuid.uuid4().hex[:12]}" for _ in range(40)]
    with httpx.Client(base_url=url) as client:
        for name in names:
            predict = client.post(f"/models/{name}/predict", json={"data": ROW})
            infer = client.post(f"/v2/models/{name}/infer", json=_v2([1, 16], ROW))
            media = client.post(
                f"/models/{name}/predict", content=b"x", headers={"Content-Type": "text/plain"}
            )
            assert (predict.status_code, infer.status_code, media.status_code) == (404, 404, 415)

    def counted() -> str | None:
        text = httpx.get(f"{url}/metrics").text
        return text if 'status="415"' in text else None

    text = wait_until(counted, what="the refusals counted")
    assert "rand-" not in text
    assert hostile.server.metric("server_requests_total", model="", status="404") >= 80


@pytest.mark.parametrize(
    "shape", [[True, 16], [2**62 + 1, 16], [1] * 100, [16.0], ["16"], [-1, 16], None],
    ids=["bool", "huge", "rank-100", "float", "string", "negative", "missing"],
)  # fmt: skip
def test_v2_shapes_numpy_cannot_use_are_400(hostile: Hostile, shape: object) -> None:
    response = httpx.post(f"{hostile.server.url}/v2/models/tiny/infer", json=_v2(shape, ROW))
    assert response.status_code == 400, response.text
    assert "shape" in response.json()["error"]


def test_values_beyond_float32_are_400(hostile: Hostile) -> None:
    url = hostile.server.url
    for response in (
        httpx.post(f"{url}/predict", json={"data": [1e300] * 16}),
        httpx.post(f"{url}/v2/models/tiny/infer", json=_v2([1, 16], [1e300] * 16)),
        httpx.post(f"{url}/v2/models/tiny/infer", json=_v2([1, 16], [-1e39, *ROW[1:]])),
    ):
        assert response.status_code == 400, response.text
        assert "float32" in response.text


@pytest.mark.parametrize("path", ["/predict", "/models/tiny/predict", "/v2/models/tiny/infer"])
@pytest.mark.parametrize(
    "content_type", ["application/jsonx", "application/json-seq", "application/json+x"]
)
def test_the_media_type_is_matched_whole(hostile: Hostile, path: str, content_type: str) -> None:
    body = orjson.dumps({"data": ROW} if "v2" not in path else _v2([1, 16], ROW))
    response = httpx.post(
        f"{hostile.server.url}{path}", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    ok = httpx.post(
        f"{hostile.server.url}{path}",
        content=body,
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text


def test_a_trickled_body_meets_an_overall_deadline(hostile: Hostile) -> None:
    """One byte every 0.3 s keeps the connection active: only an overall deadline ends it."""
    host, port = hostile.server.url.removeprefix("http://").split(":")
    stop = threading.Event()
    with socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT + 30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )

        def trickle() -> None:
            while not stop.wait(0.3):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                assert chunk, "closed without an answer"
                reply += chunk
        finally:
            stop.set()
            thread.join(5)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
    assert f"within {BODY_TIMEOUT}s".encode() in reply


def test_large_bodies_are_decoded_off_the_event_loop(hostile: Hostile) -> None:
    """Four bodies near the 8 MB limit at once: a health probe sent after them is answered
    before any of them (they used to be decoded on the event loop, the probe waiting behind)."""
    host, port = hostile.server.url.removeprefix("http://").split(":")
    body = orjson.dumps({"data": [[0.123456] * 16] * 50_000})
    assert 6_000_000 < len(body) < 8 << 20
    head = (
        b"POST /models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    big = [socket.create_connection((host, int(port)), timeout=120) for _ in range(4)]
    probe = socket.create_connection((host, int(port)), timeout=120)
    try:
        senders = [threading.Thread(target=s.sendall, args=(head + body,)) for s in big]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        probe.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
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


def test_error_bodies_show_no_internal_paths_or_digests(hostile: Hostile) -> None:
    url = hostile.server.url
    for response in (
        httpx.post(f"{url}/models/broken/predict", json={"data": ROW}),
        httpx.post(f"{url}/v2/models/broken/infer", json=_v2([1, 16], ROW)),
        httpx.get(f"{url}/v2/models/broken/ready"),
        httpx.get(f"{url}/v2/models/broken"),
    ):
        assert response.status_code == 503, response.text
        assert "refused" in response.text
        for secret in (str(hostile.volume), "versions/1", hostile.broken_sha, "e" * 64):
            assert secret not in response.text, (secret, response.text)


# Authentication: one check for both roads (the lean worker's /predict and Falcon's routes).


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("guarded")
    volume = root / "volume"
    publish_version(volume, "tiny", "1", write_mlp(root / "tiny.onnx", seed=1).path)
    with running_server(volume, root, workers=1, env={"SERVER_AUTH_TOKEN": TOKEN}) as server:
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200,
            what="tiny served",
        )
        yield server


def _raw(url: str, head: bytes, body: bytes) -> int:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(guarded: ServerProcess, scheme: str) -> None:
    headers = {"Authorization": f"{scheme} {TOKEN}"}
    assert (
        httpx.post(f"{guarded.url}/predict", json={"data": ROW}, headers=headers).status_code == 200
    )
    assert httpx.get(f"{guarded.url}/v2/models/tiny", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "values",
    [[TOKEN, TOKEN], [TOKEN, "wrong"], ["wrong", TOKEN]],
    ids=["same", "good-bad", "bad-good"],
)
def test_duplicate_authorization_headers_are_judged_the_same_on_both_roads(
    guarded: ServerProcess, values: list[str]
) -> None:
    auth = b"".join(b"Authorization: Bearer %s\r\n" % v.encode() for v in values)
    fast = _raw(
        guarded.url,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth,
        orjson.dumps({"data": ROW}),
    )
    falcon = _raw(
        guarded.url,
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth,
        orjson.dumps(_v2([1, 16], ROW)),
    )
    assert (fast, falcon) == (401, 401)


def test_unauthenticated_clients_learn_nothing(guarded: ServerProcess) -> None:
    for response in (
        httpx.post(f"{guarded.url}/models/nope/predict", json={"data": ROW}),
        httpx.get(f"{guarded.url}/models"),
        httpx.get(f"{guarded.url}/v2/models/tiny"),
    ):
        assert response.status_code == 401
        assert "tiny" not in response.text
        assert "nope" not in response.text
    assert httpx.get(f"{guarded.url}/v2/health/live").status_code == 200
