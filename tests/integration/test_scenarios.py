"""The whole pipeline proven on the production topology (issue 6).

MLflow with a PostgreSQL backend store and an S3 artifact store (moto's server on loopback, as
DigitalOcean Spaces would be), the reconciler run as CI runs it, a sidecar and a server sharing a
volume, clients calling all the while. PostgreSQL and S3 sit behind TCP proxies that a test can
cut: an outage as the components see it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.sidecar.running import WEBHOOK_SECRET, create_webhook
from tests.support.load import LoadGenerator
from tests.support.metrics import metric_value
from tests.support.onnx_models import BuiltModel, write_corrupt, write_mlp
from tests.support.pipeline import DeclaredVersion, Pipeline
from tests.support.postgres import (
    POSTGRES_URL,
    postgres_available,
    sqlalchemy_url,
    temporary_database,
)
from tests.support.processes import MlflowServer, MotoS3Server
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

ROW = [0.5] * 16


@dataclass(frozen=True, slots=True)
class Topology:
    """MLflow on PostgreSQL + S3, each dependency behind a proxy that can be cut."""

    mlflow: MlflowServer
    postgres: TcpProxy
    s3: TcpProxy
    moto: MotoS3Server
    """The S3 endpoint itself: CI and the tests reach the bucket directly, not through ``s3``."""

    @property
    def s3_env(self) -> dict[str, str]:
        return data_plane_s3_env(self.moto, self.s3)


def data_plane_s3_env(moto: MotoS3Server, proxy: TcpProxy) -> dict[str, str]:
    """S3 settings of the data plane (MLflow, sidecar): through the proxy that can be cut."""
    through_proxy = f"http://{proxy.address}"
    return {
        **moto.client_env,
        "MLFLOW_S3_ENDPOINT_URL": through_proxy,
        "AWS_ENDPOINT_URL_S3": through_proxy,
    }


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require(postgres_available(), f"PostgreSQL not reachable at {POSTGRES_URL}")
    workdir = tmp_path_factory.mktemp("topology")
    with temporary_database("mlgitops_scenarios") as database:
        moto = MotoS3Server(workdir / "moto").start()
        moto.create_bucket("artifacts")
        moto.create_bucket("models")
        pg_proxy = TcpProxy("127.0.0.1", 5432).restore()
        s3_proxy = TcpProxy("127.0.0.1", moto.port).restore()
        mlflow = MlflowServer(
            workdir / "mlflow",
            backend_store_uri=sqlalchemy_url(database, pg_proxy.address),
            artifacts_destination="s3://artifacts/mlflow",
            env=data_plane_s3_env(moto, s3_proxy),
        )
        try:
            mlflow.start()
            yield Topology(mlflow, pg_proxy, s3_proxy, moto)
        finally:
            mlflow.stop()
            pg_proxy.cut()
            s3_proxy.cut()
            moto.stop()


@pytest.fixture
def pipeline(topology: Topology, tmp_path: Path) -> Iterator[Pipeline]:
    pipe = Pipeline(topology.mlflow, tmp_path, env=topology.s3_env, interval=2.0)
    yield pipe
    pipe.stop()


@pytest.fixture
def models(tmp_path: Path) -> Callable[[int], BuiltModel]:
    """Distinct real MLPs (16 -> 4) by seed."""

    def build(seed: int) -> BuiltModel:
        return write_mlp(tmp_path / "built" / f"seed{seed}.onnx", seed=seed)

    return build


def declare_production(
    pipe: Pipeline,
    name: str,
    builds: list[BuiltModel],
    production: int,
    *,
    via_s3: bool = False,
    topology: Topology | None = None,
) -> None:
    """models.yaml with ``builds`` as versions 1..n, ``builds[production]`` in Production."""
    versions = []
    for index, build in enumerate(builds):
        if via_s3 and topology is not None:
            source = _put_s3(topology, f"{name}/{build.sha256[:12]}/model.onnx", build.path)
        else:
            source = pipe.add_file(build.path, f"{name}-{build.sha256[:12]}.onnx")
        stage = "Production" if index == production else "Archived"
        versions.append(DeclaredVersion(source=source, sha256=build.sha256, stage=stage))
    pipe.declare({name: versions})


def _put_s3(topology: Topology, key: str, path: Path) -> str:
    return topology.moto.put_object("models", key, path.read_bytes())


def assert_no_failures(load: LoadGenerator, pipe: Pipeline) -> None:
    failures = load.failures()
    assert not failures, (
        f"{len(failures)} failed requests, first: {failures[:3]}\n{pipe.logs_tail()}"
    )


def test_promote_then_roll_back_under_load(
    topology: Topology,
    pipeline: Pipeline,
    models: Callable[[int], BuiltModel],
    unique_name: str,
    record_property: Callable[[str, object], None],
) -> None:
    """Scenarios 1 and 2: v1 -> v2 with zero failed requests, then `git revert` -> v1.

    Through the webhook only: the swap under load is the same whichever way the sidecar learns
    of the new version, and polling's promotions under load are the outage scenario's pending
    promotion and the two-model scenario below.
    """
    name = unique_name
    v1, v2 = models(1), models(2)
    declare_production(pipeline, name, [v1], production=0, via_s3=True, topology=topology)
    pipeline.apply()
    version_1 = pipeline.version_of(name, v1.sha256)

    # Polls far apart: within the waits below (60 s) only the webhook can bring v2 or v1.
    pipeline.interval = 600.0
    pipeline.start_sidecar("--model", name, env={"SIDECAR_WEBHOOK_SECRET": WEBHOOK_SECRET})
    pipeline.start_server()
    pipeline.wait_served(name, version_1)
    pipeline.sidecar.wait_http(f"{pipeline.sidecar_url}/healthz")  # type: ignore[union-attr]
    create_webhook(topology.mlflow, f"{pipeline.sidecar_url}/webhook")

    with LoadGenerator(f"{pipeline.server_url}/models/{name}/predict", {"data": ROW}) as load:
        wait_until(lambda: load.versions()[version_1] > 20, what="steady traffic on v1")
        declare_production(pipeline, name, [v1, v2], production=1, via_s3=True, topology=topology)
        pipeline.apply()
        applied_at = time.monotonic()
        version_2 = pipeline.version_of(name, v2.sha256)
        first = wait_until(
            lambda: load.first_answer_from(version_2, applied_at),
            timeout=60,
            what=f"the first answer from v{version_2}",
        )
        latency = first.finished - applied_at
        record_property("apply_to_first_v2_answer_seconds_webhook", round(latency, 2))
        print(f"\n[webhook] end of apply -> first v2 answer: {latency:.2f}s")

        # Scenario 2: revert the edit (the file as it was before), apply, v1 is served again.
        declare_production(pipeline, name, [v1], production=0, via_s3=True, topology=topology)
        pipeline.apply()
        reverted_at = time.monotonic()
        wait_until(lambda: load.first_answer_from(version_1, reverted_at), timeout=60,
                   what="v1 served again after the revert")  # fmt: skip
        settle = time.monotonic()
        wait_until(lambda: len([o for o in load.snapshot() if o.started > settle]) > 50,
                   what="traffic after the rollback")  # fmt: skip

    assert_no_failures(load, pipeline)
    served = load.versions()
    assert set(served) <= {version_1, version_2}, served
    # After the rollback settled, every answer comes from v1.
    late = {o.version for o in load.snapshot() if o.started > settle + 1.0}
    assert late <= {version_1}, late
    assert pipeline.reconciler("plan", check=False).returncode == 0


def test_broken_release_is_stopped_and_v2_keeps_serving(
    topology: Topology,
    pipeline: Pipeline,
    models: Callable[[int], BuiltModel],
    unique_name: str,
    tmp_path: Path,
) -> None:
    """Scenario 3: a corrupt v3 is refused by the gate; forced into MLflow by hand, it is
    refused by the sidecar's checksum or the server's check. v2 serves throughout."""
    name = unique_name
    v1, v2 = models(11), models(12)
    declare_production(pipeline, name, [v1, v2], production=1)
    pipeline.apply()
    version_2 = pipeline.version_of(name, v2.sha256)
    pipeline.start_sidecar("--model", name)
    pipeline.start_server()
    pipeline.wait_served(name, version_2)

    corrupt = write_corrupt(tmp_path / "built" / "v3.onnx")
    with LoadGenerator(
        f"{pipeline.server_url}/models/{name}/predict", {"data": ROW}, threads=4
    ) as load:
        # 1. The gate: apply refuses to promote it, and says why.
        declare_production(pipeline, name, [v1, v2, corrupt], production=2)
        refused = pipeline.apply(check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "gate" in (refused.stdout + refused.stderr).lower()

        # 2. Forced by hand: register the corrupt file as a version with a *wrong* sha256 tag
        # and one with the right tag, promote each to Production straight in MLflow.
        # (a) a sha256 tag that does not match the bytes: the sidecar's checksum refuses it.
        refused_before = metric_value(
            pipeline.sidecar_url, "sidecar_fetches_total", model=name, result="refused"
        )
        _force_production(topology, name, corrupt, tag_sha256="f" * 64, label="mismatch")
        wait_until(
            lambda: (
                metric_value(
                    pipeline.sidecar_url, "sidecar_fetches_total", model=name, result="refused"
                )
                > refused_before
            ),
            timeout=90,
            what="the sidecar to refuse the checksum mismatch",
        )
        assert pipeline.served_version(name) == version_2
        # (b) the right sha256 tag on bytes that are not ONNX: the sidecar publishes what MLflow
        # vouches for, and the server's load check refuses it.
        failed_before = metric_value(
            pipeline.server_url, "server_model_swaps_total", model=name, result="failed"
        )
        _force_production(topology, name, corrupt, tag_sha256=corrupt.sha256, label="bad")
        wait_until(
            lambda: (
                metric_value(
                    pipeline.server_url, "server_model_swaps_total", model=name, result="failed"
                )
                > failed_before
            ),
            timeout=90,
            what="the server to refuse the corrupt model",
        )
        assert pipeline.served_version(name) == version_2
        snapshot = load.snapshot()

    assert_no_failures(load, pipeline)
    assert {o.version for o in snapshot} == {version_2}


def test_outages_leave_serving_unchanged_and_a_pending_promotion_completes(
    topology: Topology,
    pipeline: Pipeline,
    models: Callable[[int], BuiltModel],
    unique_name: str,
) -> None:
    """Scenario 4: S3, then MLflow and PostgreSQL go away while clients call; serving continues
    unchanged; when they come back, a promotion applied during the outage completes by itself."""
    name = unique_name
    v1, v2 = models(21), models(22)
    # CI reaches the bucket by its own path; the data plane (MLflow, sidecar) through the proxy.
    pipeline.reconciler_env = {
        "MLFLOW_S3_ENDPOINT_URL": topology.moto.url, "AWS_ENDPOINT_URL_S3": topology.moto.url,
    }  # fmt: skip
    declare_production(pipeline, name, [v1], production=0, via_s3=True, topology=topology)
    pipeline.apply()
    version_1 = pipeline.version_of(name, v1.sha256)
    pipeline.start_sidecar("--model", name)
    pipeline.start_server()
    pipeline.wait_served(name, version_1)

    with LoadGenerator(
        f"{pipeline.server_url}/models/{name}/predict", {"data": ROW}, threads=4
    ) as load:
        topology.s3.cut()
        try:
            # The promotion lands in MLflow, but the data plane cannot fetch it.
            declare_production(
                pipeline, name, [v1, v2], production=1, via_s3=True, topology=topology
            )
            pipeline.apply()
            version_2 = pipeline.version_of(name, v2.sha256)
            fetch_failures = partial(
                metric_value,
                pipeline.sidecar_url,
                "sidecar_fetches_total",
                model=name,
                result="failed",
            )
            wait_until(
                lambda: fetch_failures() >= 2,
                timeout=60,
                what="the sidecar failing to fetch through the S3 outage",
            )
            # Then MLflow and its PostgreSQL go too.
            topology.postgres.cut()
            topology.mlflow.stop()
            check_failures = partial(
                metric_value,
                pipeline.sidecar_url,
                "sidecar_checks_total",
                model=name,
                result="failed",
            )
            failed_before = check_failures()
            wait_until(
                lambda: check_failures() >= failed_before + 2,
                timeout=90,
                what="the sidecar failing its checks through the MLflow outage",
            )
            assert pipeline.served_version(name) == version_1
        finally:
            topology.postgres.restore()
            topology.s3.restore()
            if not topology.mlflow.is_running():
                topology.mlflow.start()
        # When they come back, the pending promotion completes by itself.
        recovered_at = time.monotonic()
        pipeline.wait_served(name, version_2, timeout=150)
        wait_until(lambda: load.first_answer_from(version_2, recovered_at), timeout=30,
                   what="clients answered by v2")  # fmt: skip

    assert_no_failures(load, pipeline)
    assert set(load.versions()) == {version_1, version_2}


def _force_production(
    topology: Topology, name: str, build: BuiltModel, *, tag_sha256: str, label: str
) -> None:
    """What a person with MLflow access could do by hand: bypass the reconciler and its gate."""
    source = _put_s3(topology, f"{name}/forced-{label}/model.onnx", build.path)
    api = f"{topology.mlflow.url}/api/2.0/mlflow"
    tags = [
        {"key": "mlgitops.sha256", "value": tag_sha256},
        {"key": "mlgitops.size", "value": str(build.size)},
    ]
    created = httpx.post(
        f"{api}/model-versions/create",
        json={"name": name, "source": source, "tags": tags},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    version = created.json()["model_version"]["version"]
    moved = httpx.post(
        f"{api}/model-versions/transition-stage",
        json={
            "name": name, "version": version, "stage": "Production",
            "archive_existing_versions": True,
        },
        timeout=30,
    )  # fmt: skip
    assert moved.status_code == 200, moved.text


def test_restarts_at_random_moments_converge_and_never_serve_a_partial_file(
    topology: Topology,
    pipeline: Pipeline,
    models: Callable[[int], BuiltModel],
    unique_name: str,
) -> None:
    """Scenario 5: SIGKILL server workers, the gunicorn master and the sidecar during a
    promotion; after restart the system converges and no partial file is ever served."""
    name = unique_name
    rng = random.Random(5)
    builds = [models(31), models(32)]
    declare_production(pipeline, name, builds, production=0)
    pipeline.apply()
    versions = [pipeline.version_of(name, b.sha256) for b in builds]
    pipeline.start_sidecar("--model", name)
    pipeline.start_server()
    pipeline.wait_served(name, versions[0])

    for round_ in range(2):
        target = (round_ + 1) % 2
        declare_production(pipeline, name, builds, production=target)
        pipeline.apply()
        time.sleep(rng.uniform(0.0, 1.5))  # a random moment during the promotion
        # Kill a worker, then the sidecar, then the whole server (master first).
        workers = _children(pipeline.server.pid)  # type: ignore[union-attr]
        if workers:
            os.kill(rng.choice(workers), signal.SIGKILL)
        pipeline.sidecar.kill_process_only()  # type: ignore[union-attr]
        pipeline.server.kill_process_only()  # type: ignore[union-attr]
        for pid in workers:  # orphans of a SIGKILLed master are reaped by their own watchdog
            _kill_quietly(pid)
        pipeline.start_sidecar("--model", name)
        pipeline.start_server()
        pipeline.wait_served(name, versions[target], timeout=120)
        response = pipeline.predict(name, ROW)
        assert response.status_code == 200, response.text
        assert response.json()["modelVersion"] == versions[target]
        # Every version directory the volume holds is whole: its files match its manifest.
        _assert_volume_whole(pipeline.volume / name)


def test_two_models_promoted_independently(
    topology: Topology,
    pipeline: Pipeline,
    models: Callable[[int], BuiltModel],
    unique_name: str,
) -> None:
    """Scenario 6: one server serves two models; promoting one leaves the other alone."""
    first, second = f"{unique_name}-a", f"{unique_name}-b"
    a1, a2, b1 = models(41), models(42), models(43)
    pipeline.declare({
        first: [DeclaredVersion(pipeline.add_file(a1.path), a1.sha256, "Production")],
        second: [DeclaredVersion(pipeline.add_file(b1.path), b1.sha256, "Production")],
    })  # fmt: skip
    pipeline.apply()
    pipeline.start_sidecar("--model", first, "--model", second)
    pipeline.start_server()
    version_a1 = pipeline.version_of(first, a1.sha256)
    version_b1 = pipeline.version_of(second, b1.sha256)
    pipeline.wait_served(first, version_a1)
    pipeline.wait_served(second, version_b1)

    with LoadGenerator(
        f"{pipeline.server_url}/models/{second}/predict", {"data": ROW}, threads=4
    ) as load:
        pipeline.declare({
            first: [DeclaredVersion(pipeline.add_file(a1.path), a1.sha256, "Archived"),
                    DeclaredVersion(pipeline.add_file(a2.path), a2.sha256, "Production")],
            second: [DeclaredVersion(pipeline.add_file(b1.path), b1.sha256, "Production")],
        })  # fmt: skip
        pipeline.apply()
        pipeline.wait_served(first, pipeline.version_of(first, a2.sha256))
    assert_no_failures(load, pipeline)
    assert set(load.versions()) == {version_b1}
    assert pipeline.served_version(second) == version_b1


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _assert_volume_whole(model_dir: Path) -> None:
    import hashlib

    from contracts.volume import MANIFEST_FILE, Manifest

    for version_dir in (model_dir / "versions").iterdir():
        manifest = Manifest.from_json((version_dir / MANIFEST_FILE).read_text())
        data = (version_dir / "model.onnx").read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest.sha256, version_dir
