"""Webhook fan-out (issue 14): one delivery to one address reaches every sidecar behind it.

Two real sidecar processes listen on one port at two loopback addresses (as two pods behind a
headless Service); MLflow's webhook goes to one receiving address (a TCP proxy standing for the
Service); the receiver forwards the signed delivery to the other, which verifies it itself.
Polling is off (600 s): only the webhook and its fan-out can flip the volumes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sidecar.running import (
    WEBHOOK_SECRET,
    RunningSidecar,
    SidecarRunner,
    create_webhook,
    delete_webhook,
    verified_version,
)
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer
from tests.support.registry import promote, register_version
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

HOSTS = ("127.0.0.2", "127.0.0.3")


def port_free_on(hosts: tuple[str, ...]) -> int:
    """A port free on every one of ``hosts`` (each sidecar binds the same port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@pytest.fixture
def sidecars(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[SidecarRunner]:
    (tmp_path / "logs").mkdir()
    runner = SidecarRunner(tmp_path / "logs", mlflow_server.url)
    yield runner
    runner.stop_all()


def test_one_webhook_to_one_address_flips_both_sidecars(
    tmp_path: Path, mlflow_server: MlflowServer, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    client: Any = MlflowClient(mlflow_server.url)
    register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path, stage="Production")
    port = port_free_on(HOSTS)
    env = {
        "SIDECAR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SIDECAR_WEBHOOK_FANOUT": ",".join(f"{host}:{port}" for host in HOSTS),
    }
    started: list[RunningSidecar] = [
        sidecars.start(
            tmp_path / f"volume-{i}", [unique_name], interval=600, env=env, port=port, host=host
        )
        for i, host in enumerate(HOSTS)
    ]
    for sidecar in started:
        sidecar.wait_version(unique_name, "1")

    with TcpProxy(HOSTS[0], port) as service:  # the one receiving address
        webhook_id = create_webhook(mlflow_server, f"http://{service.address}/webhook")
        try:
            v2 = register_version(client, unique_name, make_onnx("v2.onnx", seed=2).path)
            promoted = time.monotonic()
            promote(client, unique_name, v2.version, "Production")  # the stage tag: a webhook
            flipped: dict[int, float] = {}

            def both_flipped() -> bool:
                for index, sidecar in enumerate(started):
                    if (
                        index not in flipped
                        and verified_version(sidecar.volume, unique_name) == "2"
                    ):
                        flipped[index] = time.monotonic()
                return len(flipped) == len(started)

            wait_until(both_flipped, timeout=60, interval=0.02, what="both volumes on v2")
        finally:
            delete_webhook(mlflow_server, webhook_id)

    first, last = min(flipped.values()), max(flipped.values())
    print(f"both flipped {last - promoted:.2f}s after the promotion, {last - first:.2f}s apart")
    assert last - first < 2.0  # the fan-out's own delay; polling (600 s) played no part
    receiver, peer = started[0].log(), started[1].log()
    assert '"event": "fanout"' in receiver
    assert '"forwarded": true' in peer
    assert '"event": "fanout"' not in peer  # a forwarded delivery is never forwarded again
