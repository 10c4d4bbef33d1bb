"""The sidecar against the production topology: PostgreSQL backend, S3 (moto) artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sidecar.running import (
    WEBHOOK_SECRET,
    SidecarRunner,
    create_webhook,
    delete_webhook,
    leftovers,
    verified_version,
)
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer, MotoS3Server
from tests.support.registry import SourceKind, promote, register_version
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
def sidecars(
    tmp_path: Path, mlflow_pg_s3: MlflowServer, moto_s3: MotoS3Server
) -> Iterator[SidecarRunner]:
    # The sidecar reads s3:// sources straight from the bucket: it needs the S3 endpoint.
    runner = SidecarRunner(tmp_path, mlflow_pg_s3.url, env=moto_s3.client_env)
    yield runner
    runner.stop_all()


def test_s3_and_proxied_sources_first_fetch_then_a_webhook_promotion(
    tmp_path: Path, mlflow_pg_s3: MlflowServer, moto_s3: MotoS3Server, sidecars: SidecarRunner,
    unique_name: str, make_onnx: Callable[..., BuiltModel],
) -> None:  # fmt: skip
    from mlflow import MlflowClient

    client: Any = MlflowClient(mlflow_pg_s3.url)
    volume = tmp_path / "volume"
    models = {}
    kinds: tuple[SourceKind, ...] = ("s3", "s3-dir", "run")
    for seed, kind in enumerate(kinds, start=1):
        name = f"{unique_name}-{kind}"
        build = make_onnx(f"{kind}.onnx", seed=seed)
        mv = register_version(
            client,
            name,
            build.path,
            stage="Production",
            source_kind=kind,
            s3=moto_s3,
        )
        assert mv.source.startswith("s3://" if kind.startswith("s3") else "mlflow-artifacts:")
        models[name] = build

    result = sidecars.once(volume, list(models))
    assert result.returncode == 0, result.stderr
    for name, build in models.items():
        assert verified_version(volume, name) == "1"
        assert (volume / name / "current" / "model.onnx").read_bytes() == build.path.read_bytes()
        assert leftovers(volume, name) == []

    name = f"{unique_name}-s3"
    sidecar = sidecars.start(
        volume, [name], interval=600, env={"SIDECAR_WEBHOOK_SECRET": WEBHOOK_SECRET}
    )
    webhook_id = create_webhook(mlflow_pg_s3, f"{sidecar.url}/webhook")
    try:
        v2 = register_version(
            client, name, make_onnx("v2.onnx", seed=9).path, source_kind="s3", s3=moto_s3
        )
        promoted = time.monotonic()
        promote(client, name, v2.version, "Production")  # + the stage tag: a webhook
        sidecar.wait_version(name, "2", timeout=120)
        print(f"PG+S3: webhook-triggered fetch after {time.monotonic() - promoted:.2f}s")
        assert '"event": "webhook"' in sidecar.log()

        # S3 fails (the object is gone): current stays, the loop backs off, then recovers.
        build = make_onnx("v3.onnx", seed=10)
        v3 = register_version(client, name, build.path, source_kind="s3", s3=moto_s3)
        bucket, key = v3.source.removeprefix("s3://").split("/", 1)
        s3 = s3_client(moto_s3)
        s3.delete_object(Bucket=bucket, Key=key)
        promote(client, name, v3.version, "Production")
        wait_until(
            lambda: sidecar.healthz()["models"][name]["last_error"],
            timeout=60, what="the S3 failure to show in /healthz",
        )  # fmt: skip
        assert verified_version(volume, name) == "2"
        assert leftovers(volume, name) == []
        s3.put_object(Bucket=bucket, Key=key, Body=build.path.read_bytes())
        sidecar.wait_version(name, "3", timeout=120)  # the backoff retry, not a poll (600 s)
    finally:
        delete_webhook(mlflow_pg_s3, webhook_id)
    assert '"event": "backoff"' in sidecar.log()


def s3_client(moto_s3: MotoS3Server) -> Any:
    return moto_s3.client()
