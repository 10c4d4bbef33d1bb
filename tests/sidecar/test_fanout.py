"""Webhook fan-out: peers are every resolved address but our own; a forward is verified again."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from sidecar.fanout import Fanout, own_addresses
from sidecar.health import serve_in_thread
from sidecar.logs import json_formatter
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from sidecar.webhook import sign
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.support.waiting import wait_until

SECRET = "hush"


def test_peers_are_every_address_of_the_names_but_our_own() -> None:
    addresses = {"sidecars": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}
    fanout = Fanout(
        [("sidecars", 8081)], {("10.0.0.2", 8081)}, resolver=lambda host, port: addresses[host]
    )
    try:
        assert fanout.peers() == [("10.0.0.1", 8081), ("10.0.0.3", 8081)]
        addresses["sidecars"] = ["10.0.0.2", "10.0.0.4"]  # pods come and go: resolved each time
        assert fanout.peers() == [("10.0.0.4", 8081)]
    finally:
        fanout.close()


def test_a_bound_address_is_our_own() -> None:
    assert own_addresses("127.0.0.2") == {"127.0.0.2"}


def test_a_forwarded_delivery_is_verified_by_the_receiver_and_wakes_it(tmp_path: Path) -> None:
    settings = SidecarSettings(volume=tmp_path / "v", models=["iris"], http_host="127.0.0.1",
                               http_port=0, webhook_secret=SECRET)  # fmt: skip
    receiver = Sidecar(settings, FakeRegistry(), FakeFetcher())
    endpoint = serve_in_thread(receiver)
    fanout = Fanout([("127.0.0.1", endpoint.port)], set())
    body = json.dumps({"entity": "model_version_tag", "action": "set",
                       "data": {"name": "iris", "version": "2"}}).encode()  # fmt: skip
    now = str(int(time.time()))
    try:
        for delivery, secret in (("d1", "wrong"), ("d2", SECRET)):
            headers = {
                "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": now,
                "X-MLflow-Signature": sign(secret, delivery, now, body),
            }  # fmt: skip
            fanout.forward(body, headers, delivery)
        wait_until(receiver._wake.is_set, timeout=10, what="the forwarded delivery")
        wait_until(lambda: 'result="rejected"} 1.0' in receiver.metrics.render().decode(),
                   timeout=10, what="the forged forward rejected")  # fmt: skip
        metrics = receiver.metrics.render().decode()
        assert 'sidecar_webhook_deliveries_total{result="forwarded"} 1.0' in metrics
    finally:
        fanout.close()
        endpoint.shutdown()


@pytest.mark.parametrize("where", ["message", "extra", "traceback"])
def test_log_lines_never_carry_credentials(where: str) -> None:
    uri = "http://alice:hunter2@mlflow:5000"
    record = logging.LogRecord("sidecar", logging.WARNING, __file__, 1,
                               "cannot reach %s" if where == "message" else "x",
                               (uri,) if where == "message" else (), None)  # fmt: skip
    if where == "extra":
        record.tracking_uri = uri
    if where == "traceback":
        try:
            raise ConnectionError(f"failed to reach {uri}")
        except ConnectionError:
            import sys

            record.exc_info = sys.exc_info()
    line = json_formatter().format(record)
    assert "hunter2" not in line
    assert "http://***@mlflow:5000" in line
