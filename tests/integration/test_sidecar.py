"""The sidecar against a real ``mlflow server`` (SQLite, proxied artifacts): issue 4."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest

from contracts.registry import ROLLOUT_TAG, STAGE_TAG
from contracts.rollout import Rollout
from contracts.volume import CANDIDATE_LINK, link_path, resolve, versions_dir
from tests.sidecar.reader import reading
from tests.sidecar.running import (
    WEBHOOK_SECRET,
    SidecarRunner,
    create_webhook,
    delete_webhook,
    leftovers,
    verified_version,
)
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer
from tests.support.registry import SourceKind, promote, register_version
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


@pytest.fixture
def sidecars(tmp_path: Path, mlflow_server: MlflowServer) -> Iterator[SidecarRunner]:
    runner = SidecarRunner(tmp_path / "logs", mlflow_server.url)
    (tmp_path / "logs").mkdir()
    yield runner
    runner.stop_all()


def test_once_publishes_every_source_kind_then_an_alias(
    tmp_path: Path, client: Any, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    models = {}
    kinds: tuple[SourceKind, ...] = ("run", "runs-uri", "mlmodel", "logged-model")
    for seed, kind in enumerate(kinds, start=1):
        name = f"{unique_name}-{kind}"
        build = make_onnx(f"{kind}.onnx", seed=seed)
        register_version(client, name, build.path, stage="Production", source_kind=kind)
        models[name] = build

    result = sidecars.once(volume, list(models))

    assert result.returncode == 0, result.stderr
    for name, build in models.items():
        assert verified_version(volume, name) == "1"
        assert leftovers(volume, name) == []
        published = resolve(volume, name)
        assert published is not None
        served = onnxruntime.InferenceSession(  # loads external data from beside the ONNX file
            str(published.directory / published.manifest.model_file),
            providers=["CPUExecutionProvider"],
        )
        built = onnxruntime.InferenceSession(str(build.path), providers=["CPUExecutionProvider"])
        x = np.ones((2, build.n_inputs), dtype=np.float32)
        np.testing.assert_allclose(
            served.run(None, {"input": x})[0], built.run(None, {"input": x})[0], rtol=1e-6
        )
    logged = resolve(volume, f"{unique_name}-logged-model")
    assert logged is not None
    assert any(f.endswith(".data") for f in logged.manifest.files), "external data is published"
    assert '"event": "published"' in result.stderr  # one JSON line per event

    alias_name = f"{unique_name}-alias"
    register_version(client, alias_name, make_onnx("a1.onnx", seed=7).path, stage="Production")
    register_version(client, alias_name, make_onnx("a2.onnx", seed=8).path, alias="champion")
    # A model without that alias: --once publishes what it can and exits 1 (the init
    # container fails, Kubernetes retries).
    no_alias = f"{unique_name}-no-alias"
    register_version(client, no_alias, make_onnx("n1.onnx", seed=9).path, stage="Production")
    result = sidecars.once(tmp_path / "alias-volume", [alias_name, no_alias], "--alias", "champion")
    assert result.returncode == 1, result.stderr
    assert verified_version(tmp_path / "alias-volume", alias_name) == "2"
    assert verified_version(tmp_path / "alias-volume", no_alias) is None
    assert "has no version for alias champion" in result.stderr


def test_loop_follows_promotions_and_refuses_a_corrupt_version(
    tmp_path: Path, client: Any, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel], make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    interval = 2.0
    register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path, stage="Production")
    sidecar = sidecars.start(volume, [unique_name], interval=interval)
    sidecar.wait_version(unique_name, "1")
    assert httpx.get(f"{sidecar.url}/readyz", timeout=5).status_code == 200

    v2 = register_version(client, unique_name, make_onnx("v2.onnx", seed=2).path)
    promoted = time.monotonic()
    promote(client, unique_name, v2.version, "Production", set_stage_tag=False)
    sidecar.wait_version(unique_name, "2", timeout=interval + 60)
    print(f"promotion picked up after {time.monotonic() - promoted:.2f}s (interval {interval}s)")

    # A release whose bytes do not match the sha256 tag (corrupt upload): never published.
    good = make_onnx("v3.onnx", seed=3)
    corrupt = make_corrupt_onnx("v3-corrupt.onnx")
    register_version(
        client, unique_name, corrupt.path, stage="Production", sha256=good.sha256, size=corrupt.size
    )
    wait_until(
        lambda: 'result="refused"' in sidecar.metrics(),
        timeout=60,
        what="the corrupt version refused",
    )
    assert verified_version(volume, unique_name) == "2"
    assert not (versions_dir(volume, unique_name) / "3").exists()
    assert sidecar.healthz()["models"][unique_name]["last_error"] == "verification_failed"
    assert leftovers(volume, unique_name) == []

    register_version(client, unique_name, make_onnx("v4.onnx", seed=4).path, stage="Production")
    sidecar.wait_version(unique_name, "4")
    assert sidecar.healthz()["models"][unique_name]["last_error"] is None


def test_a_webhook_triggers_a_fetch_long_before_the_next_poll(
    tmp_path: Path, mlflow_server: MlflowServer, client: Any, sidecars: SidecarRunner,
    unique_name: str, make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    poll = 600.0  # no poll can happen during this test: only the webhook can bring v2
    register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path, stage="Production")
    sidecar = sidecars.start(
        volume, [unique_name], interval=poll, env={"SIDECAR_WEBHOOK_SECRET": WEBHOOK_SECRET}
    )
    sidecar.wait_version(unique_name, "1")
    webhook_id = create_webhook(mlflow_server, f"{sidecar.url}/webhook")
    try:
        v2 = register_version(client, unique_name, make_onnx("v2.onnx", seed=2).path)
        promoted = time.monotonic()
        # As the reconciler does: transition (no webhook), then the stage tag (a webhook).
        promote(client, unique_name, v2.version, "Production")
        sidecar.wait_version(unique_name, "2", timeout=120)
        print(f"webhook-triggered fetch after {time.monotonic() - promoted:.2f}s (poll {poll}s)")
    finally:
        delete_webhook(mlflow_server, webhook_id)
    log = sidecar.log()
    assert '"event": "webhook"' in log
    assert STAGE_TAG in client.get_model_version(unique_name, "2").tags


def test_a_reader_never_sees_a_partial_model_across_many_flips(
    tmp_path: Path, client: Any, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    builds = [make_onnx(f"v{s}.onnx", seed=s, n_inputs=64, hidden=2048) for s in (1, 2, 3)]
    for build in builds:
        register_version(client, unique_name, build.path)
    promote(client, unique_name, "1", "Production", set_stage_tag=False)
    # keep 2 of 3 versions: some flips reuse a kept directory, others download again
    sidecar = sidecars.start(volume, [unique_name], "--keep-versions", "2", interval=0.1)
    sidecar.wait_version(unique_name, "1")

    flips = 12
    with reading(volume, unique_name, {b.sha256 for b in builds}) as report:
        for flip in range(1, flips + 1):
            version = str(flip % 3 + 1)
            promote(client, unique_name, version, "Production", set_stage_tag=False)
            sidecar.wait_version(unique_name, version)
    assert report.errors == []
    assert len(report.seen) == 3, "the reader missed versions: it proved nothing"
    published = sidecar.log().count('"event": "published"')
    assert published > 3, "every flip reused a directory: no download raced the reader"
    print(f"{flips} flips, {published} downloads, {report.reads} verified reads")


def test_a_rollout_tag_publishes_the_candidate_and_its_removal_unlinks_it(
    tmp_path: Path, client: Any, sidecars: SidecarRunner, unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    volume = tmp_path / "volume"
    register_version(client, unique_name, make_onnx("v1.onnx", seed=1).path, stage="Production")
    register_version(client, unique_name, make_onnx("v2.onnx", seed=2).path, stage="Staging")
    sidecar = sidecars.start(volume, [unique_name], interval=0.3)
    sidecar.wait_version(unique_name, "1")

    rollout = {"candidate_version": "2", "mode": "canary", "weight": 10}
    client.set_registered_model_tag(unique_name, ROLLOUT_TAG, json.dumps(rollout))
    sidecar.wait_version(unique_name, "2", role=CANDIDATE_LINK)
    candidate = resolve(volume, unique_name, CANDIDATE_LINK)
    assert candidate is not None
    assert candidate.manifest.role == "candidate"
    assert candidate.manifest.rollout == Rollout.from_dict(rollout)
    assert verified_version(volume, unique_name) == "1"

    rollout = {**rollout, "mode": "shadow", "weight": 0}
    client.set_registered_model_tag(unique_name, ROLLOUT_TAG, json.dumps(rollout))
    wait_until(
        lambda: (found := resolve(volume, unique_name, CANDIDATE_LINK))
        and found.manifest.rollout == Rollout.from_dict(rollout),
        timeout=60, what="the candidate manifest to carry the new rollout",
    )  # fmt: skip

    candidate_metric = f'sidecar_current_version{{model="{unique_name}",role="candidate"}} 2.0'
    assert candidate_metric in sidecar.metrics()

    client.delete_registered_model_tag(unique_name, ROLLOUT_TAG)
    wait_until(
        lambda: not link_path(volume, unique_name, CANDIDATE_LINK).is_symlink(),
        timeout=60, what="the candidate link to go",
    )  # fmt: skip
    assert verified_version(volume, unique_name) == "1"
    assert candidate_metric not in sidecar.metrics()

    sidecar.process.stop()  # SIGTERM: finishes the cycle, exits cleanly
    assert sidecar.process.popen is not None
    assert sidecar.process.popen.returncode == 0
