"""Models logged the way their users log them, against a real MLflow 3 server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from contracts.digest import list_files
from tests.support.converters import ConvertedModel, log_as_artifact, log_onnx_model
from tests.support.processes import MlflowServer

pytestmark = pytest.mark.integration


def test_log_model_in_a_run_is_a_logged_model_stored_with_mlmodel_and_external_data(
    tmp_path: Path, mlflow_server: MlflowServer, converted: Callable[[str], ConvertedModel]
) -> None:
    logged = log_onnx_model(mlflow_server.url, converted("torch-export"), tmp_path / "stored")

    assert logged.model_uri == f"models:/{logged.model_id}"
    assert logged.model_id.startswith("m-")
    assert logged.storage_uri.startswith("mlflow-artifacts:/")
    assert logged.storage_uri.endswith(f"/models/{logged.model_id}/artifacts")
    stored = list(list_files(logged.stored))
    assert {"MLmodel", "model.onnx"} <= set(stored)
    external = [name for name in stored if name.endswith(".data")]
    assert len(external) == 1, f"log_model saved no external weight file: {stored}"
    mlmodel = yaml.safe_load((logged.stored / "MLmodel").read_text())
    assert mlmodel["flavors"]["onnx"]["data"] == "model.onnx"
    run = httpx.get(
        f"{mlflow_server.url}/api/2.0/mlflow/runs/get", params={"run_id": logged.run_id}, timeout=10
    )
    assert run.status_code == 200, run.text
    assert logged.sha256 != converted("torch-export").sha256  # log_model re-saves the graph


def test_log_artifact_puts_the_converters_files_under_the_runs_model_directory(
    mlflow_server: MlflowServer, converted: Callable[[str], ConvertedModel]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    single = log_as_artifact(mlflow_server.url, converted("sklearn-random-forest"))
    assert single.runs_uri == f"runs:/{single.run_id}/model/model.onnx"
    assert single.artifacts_uri.startswith("mlflow-artifacts:/")
    assert [f.path for f in client.list_artifacts(single.run_id, "model")] == ["model/model.onnx"]

    directory = log_as_artifact(mlflow_server.url, converted("torch-export"))
    assert directory.runs_uri == f"runs:/{directory.run_id}/model"
    listed = sorted(f.path for f in client.list_artifacts(directory.run_id, "model"))
    assert listed == ["model/model.onnx", "model/model.onnx.data"]
