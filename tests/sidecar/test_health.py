"""The HTTP endpoint: probes, metrics, and a signed webhook waking the loop."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.health import THREADS, serve_in_thread
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from sidecar.webhook import sign
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.support.onnx_models import write_mlp

SECRET = "hush"
TIMEOUT = 1.0


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Sidecar, str]]:
    registry = FakeRegistry()
    registry.add("iris", "1", write_mlp(tmp_path / "m.onnx").path, production=True)
    settings = SidecarSettings(
        volume=tmp_path / "volume", models=["iris"], http_host="127.0.0.1", http_port=0,
        webhook_secret=SECRET,
    )  # fmt: skip
    sidecar = Sidecar(settings, registry, FakeFetcher())
    server = serve_in_thread(sidecar, timeout=TIMEOUT)
    try:
        yield sidecar, f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()


def test_ready_only_once_every_model_is_published(running: tuple[Sidecar, str]) -> None:
    sidecar, url = running
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 503
    sidecar.sync_all()
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"]["iris"]["current"] == "1"
    metrics = httpx.get(f"{url}/metrics").text
    assert 'sidecar_current_version{model="iris",role="current"} 1.0' in metrics
    assert 'sidecar_fetches_total{model="iris",result="published",role="current"} 1.0' in metrics
    assert "sidecar_fetch_seconds_bucket" in metrics
    assert 'sidecar_fetch_bytes_total{model="iris"}' in metrics


def _post(url: str, body: bytes, secret: str, timestamp: int) -> httpx.Response:
    delivery = str(uuid.uuid4())
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": sign(secret, delivery, str(timestamp), body),
    }
    return httpx.post(f"{url}/webhook", content=body, headers=headers)


def test_a_signed_webhook_wakes_the_loop_and_a_forged_one_does_not(
    running: tuple[Sidecar, str],
) -> None:
    sidecar, url = running
    body = json.dumps({"entity": "model_version_tag", "action": "set",
                       "data": {"name": "iris", "version": "2"}}).encode()  # fmt: skip
    forged = _post(url, body, "guess", int(time.time()))
    assert forged.status_code == 401
    assert "signature" in forged.json()["description"]
    assert not sidecar._wake.is_set()
    stale = _post(url, body, SECRET, int(time.time()) - 3600)
    assert stale.status_code == 401
    assert not sidecar._wake.is_set()
    other = json.dumps({"entity": "model_version_tag", "action": "set",
                        "data": {"name": "not-followed", "version": "2"}}).encode()  # fmt: skip
    assert _post(url, other, SECRET, int(time.time())).json() == {"accepted": True, "check": False}
    assert not sidecar._wake.is_set()
    accepted = _post(url, body, SECRET, int(time.time()))
    assert accepted.status_code == 200
    assert sidecar._wake.is_set()


def test_unknown_routes_keep_falcons_error_shape(running: tuple[Sidecar, str]) -> None:
    _, url = running
    response = httpx.get(f"{url}/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"title", "description"}


def _exchange(url: str, raw_request: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Send raw bytes on one connection; read every answer until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    answers = []
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(raw_request)
        reply = raw.makefile("rb")
        while status := reply.readline().decode("latin-1"):
            headers = {}
            while (line := reply.readline().decode("latin-1").strip()) != "":
                name, _, value = line.partition(":")
                headers[name.lower()] = value.strip()
            body = reply.read(int(headers.get("content-length", 0)))
            answers.append((int(status.split()[1]), headers, body))
            if headers.get("connection", "").lower() == "close":
                break
    return answers


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_a_webhook_with_an_invalid_length_is_a_bad_request(
    running: tuple[Sidecar, str], length: str
) -> None:
    sidecar, url = running
    head = f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    answers = _exchange(url, head.encode())
    assert [status for status, _, _ in answers] == [400]
    assert not sidecar._wake.is_set()


@pytest.mark.parametrize("path", ["/nope", "/webhook"])
def test_a_refused_request_s_body_is_never_read_as_the_next_request(
    running: tuple[Sidecar, str], path: str
) -> None:
    _, url = running
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    first = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
        + smuggled
    )
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = _exchange(url, first + second)
    assert [status for status, _, _ in answers] == [404 if path == "/nope" else 401, 200]
    assert json.loads(answers[1][2])["status"] == "alive"  # /healthz, not the smuggled /metrics


def test_a_body_over_the_limit_is_refused_without_reading_it(
    running: tuple[Sidecar, str],
) -> None:
    sidecar, url = running
    head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
    answers = _exchange(url, head)
    assert [status for status, _, _ in answers] == [413]
    assert not sidecar._wake.is_set()


def test_a_400_digit_timestamp_is_a_bad_request(running: tuple[Sidecar, str]) -> None:
    sidecar, url = running
    body = b'{"entity": "model_version_tag", "action": "set", "data": {"name": "iris"}}'
    timestamp = "9" * 400
    response = httpx.post(f"{url}/webhook", content=body, headers={
        "X-MLflow-Delivery-Id": "d1", "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": sign(SECRET, "d1", timestamp, body),
    })  # fmt: skip
    assert response.status_code == 400
    assert "unix seconds" in response.json()["description"]
    assert not sidecar._wake.is_set()


def test_a_replayed_delivery_is_refused(running: tuple[Sidecar, str]) -> None:
    sidecar, url = running
    body = b'{"entity": "model_version_tag", "action": "set", "data": {"name": "iris"}}'
    now = str(int(time.time()))
    headers = {
        "X-MLflow-Delivery-Id": "once", "X-MLflow-Timestamp": now,
        "X-MLflow-Signature": sign(SECRET, "once", now, body),
    }  # fmt: skip
    assert httpx.post(f"{url}/webhook", content=body, headers=headers).status_code == 200
    sidecar._wake.clear()
    replay = httpx.post(f"{url}/webhook", content=body, headers=headers)
    assert replay.status_code == 409
    assert not sidecar._wake.is_set()
    assert (
        'sidecar_webhook_deliveries_total{result="duplicate"} 1.0'
        in httpx.get(f"{url}/metrics").text
    )


def test_stalled_clients_hold_no_thread_each_and_are_dropped(
    running: tuple[Sidecar, str],
) -> None:
    _, url = running
    host, port = url.removeprefix("http://").split(":")
    before = threading.active_count()
    stalled = []
    for _ in range(40):  # each declares a body and never sends it
        conn = socket.create_connection((host, int(port)), timeout=10)
        conn.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
        stalled.append(conn)
    try:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert threading.active_count() <= before + THREADS
        for conn in stalled:  # closed by the server after its socket timeout
            assert conn.recv(1024) == b""
    finally:
        for conn in stalled:
            conn.close()
