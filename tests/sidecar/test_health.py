"""The HTTP endpoint: probes, metrics, and a signed webhook waking the loop."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.health import SidecarHTTPServer, serve_in_thread
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from sidecar.webhook import sign
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.support.onnx_models import write_mlp

SECRET = "hush"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Sidecar, str]]:
    registry = FakeRegistry()
    registry.add("iris", "1", write_mlp(tmp_path / "m.onnx").path, production=True)
    settings = SidecarSettings(
        volume=tmp_path / "volume", models=["iris"], http_host="127.0.0.1", http_port=0,
        webhook_secret=SECRET,
    )  # fmt: skip
    sidecar = Sidecar(settings, registry, FakeFetcher())
    server: SidecarHTTPServer = serve_in_thread(sidecar)
    try:
        yield sidecar, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


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


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_a_webhook_with_an_invalid_length_is_a_bad_request(
    running: tuple[Sidecar, str], length: str
) -> None:
    sidecar, url = running
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(head.encode())
        reply = raw.makefile("rb")
        status = reply.readline().decode("latin-1")
        headers = {}
        while (line := reply.readline().decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        body = json.loads(reply.read(int(headers["content-length"])))
    assert status.split()[1] == "400", status
    assert body == {"title": "400 Bad Request", "description": "invalid Content-Length"}
    assert not sidecar._wake.is_set()
