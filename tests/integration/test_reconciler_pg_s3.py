"""The reconciler on the production topology: PostgreSQL backend store, S3 (moto) artifacts."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from contracts.digest import identity
from contracts.registry import SHA256_TAG, SOURCE_TAG, STAGE_TAG
from reconciler.cli import main
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.onnx_models import BuiltModel, external_data_model
from tests.support.processes import MlflowServer, MotoS3Server

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def test_create_and_promote_with_s3_and_repository_sources(
    mlflow_pg_s3: MlflowServer,
    moto_s3: MotoS3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_pg_s3.url)
    monkeypatch.setenv("RECONCILER_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    for key, value in moto_s3.client_env.items():
        monkeypatch.setenv(key, value)
    v1, v2 = make_onnx("p1.onnx", seed=11), make_onnx("p2.onnx", seed=12)
    v1_uri = moto_s3.put_object("models", f"{unique_name}/v1/model.onnx", v1.path.read_bytes())
    models_file = tmp_path / "models.yaml"

    def apply(versions: list[dict[str, Any]]) -> None:
        models_file.write_text(
            yaml.safe_dump({"models": [{"name": unique_name, "versions": versions}]})
        )
        capsys.readouterr()
        code = main(["apply", "-f", str(models_file)])
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert main(["plan", "-f", str(models_file)]) == 0, capsys.readouterr().out

    client = MlflowClient(mlflow_pg_s3.url)
    apply([{"source": v1_uri, "sha256": v1.sha256, "stage": "Production", "aliases": ["live"]}])
    first = client.get_model_version(unique_name, "1")
    assert (first.source, first.current_stage) == (v1_uri, "Production")
    assert first.tags[SHA256_TAG] == v1.sha256

    repository_path = os.path.relpath(v2.path, tmp_path)
    apply(
        [
            {"source": v1_uri, "sha256": v1.sha256, "stage": "Archived"},
            {"source": repository_path, "sha256": v2.sha256, "stage": "Production",
             "aliases": ["live"]},
        ]
    )  # fmt: skip
    second = client.get_model_version(unique_name, "2")
    assert second.current_stage == "Production"
    assert second.tags[SOURCE_TAG] == repository_path
    assert second.tags[STAGE_TAG] == "Production"
    # The repository file was uploaded as a run artifact directory holding model.onnx (in S3).
    assert str(second.source).startswith("mlflow-artifacts:")
    assert str(second.source).endswith("/model")
    uploaded = moto_s3_keys(moto_s3, "mlflow-artifacts")
    assert any(key.endswith("/model/model.onnx") for key in uploaded)
    assert client.get_model_version(unique_name, "1").current_stage == "Archived"
    assert client.get_registered_model(unique_name).aliases == {"live": "2"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        latest = client.get_latest_versions(unique_name, stages=["Production"])
    assert [v.version for v in latest] == ["2"]

    # An s3:// directory (ONNX + external data): one identity over its files, gated whole.
    exported = external_data_model(tmp_path / "export", seed=7)
    for file in exported.iterdir():
        moto_s3.put_object("models", f"{unique_name}/dir/{file.name}", file.read_bytes())
    directory_uri = f"s3://models/{unique_name}/dir"
    apply(
        [
            {"source": v1_uri, "sha256": v1.sha256, "stage": "Archived"},
            {"source": repository_path, "sha256": v2.sha256, "stage": "Archived"},
            {"source": directory_uri, "sha256": identity(exported), "stage": "Production",
             "aliases": ["live"], "sample_input": [[1.0, 1.0, 1.0, 1.0]],
             "breaking_change_acknowledged": "a new export with another signature"},
        ]
    )  # fmt: skip
    third = client.get_model_version(unique_name, "3")
    assert (third.source, third.current_stage) == (directory_uri, "Production")
    assert third.tags[SHA256_TAG] == identity(exported)


def moto_s3_keys(moto_s3: MotoS3Server, bucket: str) -> list[str]:
    pages = moto_s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]
