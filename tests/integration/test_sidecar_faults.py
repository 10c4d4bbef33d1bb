"""The sidecar under faults: MLflow down and back, the sidecar SIGKILLed mid-download."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from contracts.volume import link_path
from tests.sidecar.reader import reading
from tests.sidecar.running import SidecarRunner, leftovers, verified_version
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer
from tests.support.registry import promote, register_version
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

FAST_BACKOFF = {"SIDECAR_BACKOFF_INITIAL": "0.2", "SIDECAR_BACKOFF_MAX": "2"}


def test_mlflow_down_and_back_leaves_current_alone_then_recovers(
    tmp_path: Path, fresh_mlflow_server: MlflowServer, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    mlflow = fresh_mlflow_server
    client = MlflowClient(mlflow.url)
    volume = tmp_path / "volume"
    v1 = make_onnx("v1.onnx", seed=1)
    register_version(client, unique_name, v1.path, stage="Production")
    runner = SidecarRunner(tmp_path, mlflow.url)
    try:
        sidecar = runner.start(volume, [unique_name], interval=0.5, env=FAST_BACKOFF)
        sidecar.wait_version(unique_name, "1")
        link_before = os.readlink(link_path(volume, unique_name))
        with reading(volume, unique_name, {v1.sha256}) as report:
            mlflow.stop()
            wait_until(
                lambda: failed_cycles(sidecar.metrics()) >= 2,
                timeout=120, what="the sidecar to notice MLflow is down (2 failed cycles)",
            )  # fmt: skip
            health = sidecar.healthz()
            assert health["models"][unique_name]["last_error"]
            assert health["models"][unique_name]["current"] == "1"
            assert os.readlink(link_path(volume, unique_name)) == link_before
            assert verified_version(volume, unique_name) == "1"
            assert '"event": "backoff"' in sidecar.log()

            mlflow.start()
        assert report.errors == []
        assert report.reads > 0
        assert os.readlink(link_path(volume, unique_name)) == link_before

        register_version(client, unique_name, make_onnx("v2.onnx", seed=2).path, stage="Production")
        sidecar.wait_version(unique_name, "2", timeout=120)
        wait_until(lambda: sidecar.healthz()["models"][unique_name]["last_error"] is None,
                   timeout=30, what="the error to clear")  # fmt: skip
    finally:
        runner.stop_all()


def failed_cycles(metrics: str) -> float:
    match = re.search(r"^sidecar_consecutive_failed_cycles (\S+)$", metrics, re.MULTILINE)
    assert match, "the metric sidecar_consecutive_failed_cycles is missing"
    return float(match.group(1))


@pytest.fixture
def sidecars(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[SidecarRunner]:
    runner = SidecarRunner(tmp_path, mlflow_server.url)
    yield runner
    runner.stop_all()


def partial_download(volume: Path, model: str, full_size: int) -> int | None:
    """Size of a file being downloaded into ``<model>/.tmp-*/`` (0 < size < full), if any."""
    for scratch in (volume / model).glob(".tmp-*"):
        for path in scratch.rglob("*.onnx"):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if 0 < size < full_size:
                return size
    return None


@pytest.mark.slow
def test_sigkill_mid_download_keeps_a_complete_current_and_cleans_up_at_restart(
    tmp_path: Path, mlflow_server: MlflowServer, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    volume = tmp_path / "volume"
    small = make_onnx("small.onnx", seed=1)
    register_version(client, unique_name, small.path, stage="Production")
    sidecar = sidecars.start(volume, [unique_name], interval=0.2)
    sidecar.wait_version(unique_name, "1")

    killed_at: int | None = None
    big: BuiltModel | None = None
    for attempt in range(3):  # a download can outrun the watcher; then try a new version
        big = make_onnx(f"big{attempt}.onnx", seed=10 + attempt, n_inputs=1000, hidden=10_000)
        mv = register_version(client, unique_name, big.path)
        promote(client, unique_name, mv.version, "Production", set_stage_tag=False)

        def in_progress(size: int = big.size, version: str = mv.version) -> int | None:
            """Bytes so far of a download in progress; -1 if it finished before we looked."""
            if verified_version(volume, unique_name) == version:
                return -1
            return partial_download(volume, unique_name, size)

        size = wait_until(in_progress, timeout=60, interval=0, what="a download in progress")
        if size > 0:
            sidecar.process.kill_process_only(signal.SIGKILL)
            assert sidecar.process.popen is not None
            sidecar.process.popen.wait(timeout=30)
            killed_at = size
            break
    assert big is not None
    assert killed_at is not None, "every download finished before the kill: nothing was shown"

    # Killed mid-download: current still the last complete, verified model; scratch left over.
    previous = verified_version(volume, unique_name)
    assert previous is not None
    assert previous != mv.version
    assert leftovers(volume, unique_name), "a SIGKILL mid-download leaves scratch behind"
    print(f"killed at {killed_at} of {big.size} bytes; current stayed at version {previous}")

    restarted = sidecars.start(volume, [unique_name], interval=0.2)
    restarted.wait_version(unique_name, mv.version, timeout=120)
    assert leftovers(volume, unique_name) == []
    assert '"event": "cleanup"' in restarted.log()
    published = volume / unique_name / "versions" / mv.version / "model.onnx"
    assert published.stat().st_size == big.size
