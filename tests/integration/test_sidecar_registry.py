"""The sidecar against registries as companies have them (issues 11 and 13), real MLflow servers.

Whole-artifact identity of LoggedModels (external data, MLmodel, env files) with tampering in
the artifact store; a model registered by hand beside managed ones on an MLflow 2.x server;
credentials in the tracking URI; a damaged artifact repaired in the store and a file corrupted
in the volume, both picked up without a restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.volume import resolve
from tests.sidecar.running import SidecarRunner, verified_version
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer, free_port
from tests.support.registry import promote, register_version
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


@pytest.fixture
def sidecars(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[SidecarRunner]:
    (tmp_path / "logs").mkdir()
    runner = SidecarRunner(tmp_path / "logs", mlflow_server.url)
    yield runner
    runner.stop_all()


def store_path(server: MlflowServer, artifact_uri: str) -> Path:
    """Where a ``mlflow-artifacts:/`` URI lives in the server's local artifact store."""
    return Path(server.artifacts_destination) / artifact_uri.removeprefix("mlflow-artifacts:/")


def logged_model_dir(server: MlflowServer, client: Any, version: Any) -> Path:
    model_id = version.source.removeprefix("models:/")
    return store_path(server, client.get_logged_model(model_id).artifact_location)


def test_a_logged_model_is_verified_whole_and_tampering_in_the_store_is_refused(
    tmp_path: Path, mlflow_server: MlflowServer, client: Any, sidecars: SidecarRunner,
    unique_name: str, make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    v1 = register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path,
                          stage="Production", source_kind="logged-model")  # fmt: skip
    first = sidecars.once(volume, [unique_name])
    assert first.returncode == 0, first.stderr
    assert verified_version(volume, unique_name) == "1"
    published = resolve(volume, unique_name)
    assert published is not None
    assert {"MLmodel", "model.onnx"} <= set(published.manifest.files)
    assert any(name.endswith(".data") for name in published.manifest.files), "external data"
    assert "registered_model_meta" not in published.manifest.files  # never in the store
    assert published.manifest.sha256 == v1.tags["mlgitops.sha256"]
    bounded = sidecars.once(tmp_path / "bounded", [unique_name],
                            env={"SIDECAR_MAX_ARTIFACT_FILES": "2"})  # fmt: skip
    assert bounded.returncode == 1
    assert "its listing shows more than 2 files" in bounded.stderr  # refused before downloading
    assert verified_version(tmp_path / "bounded", unique_name) is None

    tampers: dict[str, Callable[[Path], None]] = {
        "a changed weight file": lambda d: next(d.glob("*.data")).write_bytes(b"\0" * 64),
        "an added file": lambda d: (d / "extra.txt").write_text("not registered"),
        "a removed file": lambda d: (d / "python_env.yaml").unlink(),
    }
    for seed, (what, tamper) in enumerate(tampers.items(), start=2):
        version = register_version(client, unique_name, make_onnx(f"v{seed}.onnx", seed=seed).path,
                                   stage="Production", source_kind="logged-model")  # fmt: skip
        tamper(logged_model_dir(mlflow_server, client, version))
        result = sidecars.once(volume, [unique_name])
        assert result.returncode == 1, f"{what}: {result.stderr}"
        assert "identity of the" in result.stderr, what
        assert verified_version(volume, unique_name) == "1", what


def test_bytes_beyond_the_bound_stop_the_download_whatever_the_size_tag_says(
    tmp_path: Path, client: Any, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    build = make_onnx("big.onnx", seed=1, n_inputs=64, hidden=512)
    register_version(client, unique_name, build.path, stage="Production", size=100)  # a lie
    result = sidecars.once(tmp_path / "volume", [unique_name],
                           env={"SIDECAR_MAX_ARTIFACT_BYTES": "1000"})  # fmt: skip
    assert result.returncode == 1
    assert "more than 1000 bytes arrived" in result.stderr
    assert verified_version(tmp_path / "volume", unique_name) is None
    assert '"mlflow.' not in result.stderr  # proxied sources need no MLflow client at all


def test_follow_all_on_mlflow_2_skips_a_model_registered_by_hand_and_stays_ready(
    tmp_path: Path, mlflow2_server: MlflowServer, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    client = MlflowClient(mlflow2_server.url)
    managed = f"{unique_name}-managed"
    theirs = f"{unique_name}-theirs"
    register_version(client, managed, make_onnx("ours.onnx", seed=1).path, stage="Production")
    client.create_registered_model(theirs)  # another team's: by hand, no mlgitops tags
    run = client.create_run(experiment_id="0")
    client.log_artifact(run.info.run_id, str(make_onnx("theirs.onnx", seed=2).path), "model")
    mv = client.create_model_version(
        theirs, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    promote(client, theirs, mv.version, "Production", set_stage_tag=False)
    (tmp_path / "logs").mkdir()
    runner = SidecarRunner(tmp_path / "logs", mlflow2_server.url)
    volume = tmp_path / "volume"
    try:
        sidecar = runner.start(volume, [], interval=0.5)
        sidecar.wait_version(managed, "1")
        wait_until(
            lambda: httpx.get(f"{sidecar.url}/readyz", timeout=5).status_code == 200,
            timeout=60, what="the follow-all sidecar ready",
        )  # fmt: skip
        checks = f'sidecar_checks_total{{model="{managed}",result="ok"}} '
        wait_until(
            lambda: any(line.startswith(checks) and float(line.split()[-1]) >= 3
                        for line in sidecar.metrics().splitlines()),
            timeout=60, what="three cycles",
        )  # fmt: skip
        health = sidecar.healthz()
        assert theirs not in health["models"]
        assert health["unmanaged_models"] >= 1
        assert "sidecar_unmanaged_models" in sidecar.metrics()
        assert not (volume / theirs).exists()
        log = sidecar.log()
        assert '"message": "MLflow server 2.' in log
        assert log.count(f'"message": "skipping {theirs}:') == 1, "logged once, not per cycle"
    finally:
        runner.stop_all()


def test_credentials_in_the_tracking_uri_are_never_logged_or_served(
    tmp_path: Path, mlflow_server: MlflowServer, client: Any, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path, stage="Production")
    (tmp_path / "logs").mkdir()
    password = "hunter2-s3cr3t"
    uri = mlflow_server.url.replace("http://", f"http://alice:{password}@")
    runner = SidecarRunner(tmp_path / "logs", uri)
    result = runner.once(tmp_path / "volume", [unique_name])
    assert result.returncode == 0, result.stderr
    assert password not in result.stderr + result.stdout
    assert "http://***@127.0.0.1" in result.stderr  # the start-up line, masked

    down = SidecarRunner(tmp_path / "logs", f"http://alice:{password}@127.0.0.1:{free_port()}")
    try:
        sidecar = down.start(tmp_path / "volume-2", [unique_name], interval=0.2)
        wait_until(
            lambda: sidecar.healthz()["models"].get(unique_name, {}).get("last_error"),
            timeout=60, what="a failed check",
        )  # fmt: skip
        health = httpx.get(f"{sidecar.url}/healthz", timeout=5).text
        assert password not in health
        assert sidecar.healthz()["models"][unique_name]["last_error"] == "registry_unavailable"
        assert password not in sidecar.log()
        assert "***@127.0.0.1" in sidecar.log()
    finally:
        down.stop_all()


def test_a_repaired_artifact_and_a_corrupted_volume_file_are_picked_up_without_restart(
    tmp_path: Path, mlflow_server: MlflowServer, client: Any, sidecars: SidecarRunner,
    unique_name: str, make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    build = make_onnx("v1.onnx", seed=1)
    version = register_version(client, unique_name, build.path, stage="Production")
    stored = store_path(mlflow_server, version.source) / "model.onnx"
    good = stored.read_bytes()
    stored.write_bytes(good[:-8])  # damaged in the artifact store after registration
    sidecar = sidecars.start(
        volume, [unique_name], interval=0.3, env={"SIDECAR_REFUSAL_RETRY": "1"}
    )
    wait_until(lambda: 'result="refused"' in sidecar.metrics(), timeout=60,
               what="the damaged version refused")  # fmt: skip
    assert verified_version(volume, unique_name) is None

    stored.write_bytes(good)  # repaired: no restart needed
    sidecar.wait_version(unique_name, "1", timeout=60)
    first = resolve(volume, unique_name)
    assert first is not None

    (first.directory / "model.onnx").write_bytes(b"not onnx any more")
    wait_until(
        lambda: (found := resolve(volume, unique_name)) is not None
        and found.directory != first.directory
        and verified_version(volume, unique_name) == "1",
        timeout=60, what="the corrupted copy published again",
    )  # fmt: skip
    assert f'sidecar_volume_repairs_total{{model="{unique_name}"}} 1.0' in sidecar.metrics()
    assert sidecar.healthz()["models"][unique_name]["last_error"] is None
