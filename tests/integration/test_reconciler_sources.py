"""Every source kind a team produces, against real MLflow servers (3.x and 2.x).

Models are logged the way their users log them (``mlflow.onnx.log_model`` in a run,
``MlflowClient.log_artifact``); a model registered by hand sits beside the managed ones.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from contracts.digest import identity
from contracts.registry import SHA256_TAG
from reconciler.registry import mlflow_uris
from tests.integration.reconciler_cli import TOKEN, Cli, cli_against, server_pod, version_entry
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.server.volume import publish_version
from tests.support.onnx_models import BuiltModel, external_data_model
from tests.support.processes import MlflowServer, free_port

pytestmark = pytest.mark.integration


def storage_uri(server: MlflowServer, uri: str) -> str:
    """Where the artifact store holds a ``models:/`` URI's files (any other URI: itself)."""
    if not uri.startswith("models:/"):
        return uri
    client = MlflowClient(server.url, registry_uri=server.url)
    reference = uri.removeprefix("models:/")
    if reference.startswith("m-"):
        import mlflow

        with mlflow_uris(server.url):
            return str(mlflow.get_logged_model(reference).artifact_location)
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, version = reference.rsplit("/", 1)
    return str(client.get_model_version_download_uri(name, version))


def downloaded_identity(server: MlflowServer, uri: str) -> str:
    """The identity of the artifact's files as the store holds them (what the sidecar fetches).

    Resolved to the storage location first: MLflow's own ``models:/`` download adds a
    ``registered_model_meta`` file the store does not hold."""
    import mlflow.artifacts

    with mlflow_uris(server.url), tempfile.TemporaryDirectory() as scratch:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=storage_uri(server, uri),
            dst_path=scratch,
            tracking_uri=server.url,
            registry_uri=server.url,
        )
        return identity(Path(local))


def log_onnx_model(server: MlflowServer, model_file: Path) -> Any:
    """``mlflow.onnx.log_model`` in a run, at its default options (weights as external data)."""
    import mlflow
    import mlflow.onnx
    import onnx

    with mlflow_uris(server.url), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes on signatures and type hints
        with mlflow.start_run():
            return mlflow.onnx.log_model(onnx.load(str(model_file)), name="model")


def log_artifact_run(client: MlflowClient, model_file: Path) -> str:
    """A run holding ``model/<file>`` logged with ``MlflowClient.log_artifact``: its id."""
    run = client.create_run("0")
    client.log_artifact(run.info.run_id, str(model_file), "model")
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def by_hand(client: MlflowClient, name: str, source: str, run_id: str | None = None) -> None:
    """Another team's model: registered by hand, no mlgitops tag, an alias on it."""
    client.create_registered_model(name)
    client.create_model_version(name, source, run_id=run_id)
    client.set_registered_model_alias(name, "champion", "1")


def apply_converges(cli: Cli, models: list[dict[str, Any]]) -> str:
    """validate, plan (changes), apply, plan again (none): the second plan's text."""
    cli.write(models)
    code, out, err = cli("validate", "--no-files")
    assert code == 0, out + err
    code, out, err = cli("plan")
    assert code == 2, out + err
    code, out, err = cli("apply")
    assert code == 0, out + err
    code, out, err = cli("plan")
    assert code == 0, out + err
    return out


def test_every_source_kind_registers_gates_and_converges_on_mlflow_3(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:
    cli = cli_against(mlflow_server, tmp_path, capsys, monkeypatch)
    client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
    base = cli.models_file.parent
    built = make_onnx("logged.onnx", seed=31)
    logged = log_onnx_model(mlflow_server, built.path)
    storage = client.get_logged_model(logged.model_id).artifact_location
    run_id = log_artifact_run(client, make_onnx("run.onnx", seed=32).path)
    theirs = f"{unique_name}-theirs"
    by_hand(client, theirs, f"runs:/{run_id}/model", run_id)
    directory = external_data_model(base / "models" / "torch-export")
    sources = {
        "logged": logged.model_uri,
        "storage": storage,
        "runs": f"runs:/{run_id}/model",
        "version": f"models:/{theirs}/1",
        "alias": f"models:/{theirs}@champion",
    }
    models = [
        {"name": f"{unique_name}-{kind}", "versions": [{
            "source": source, "sha256": downloaded_identity(mlflow_server, source),
            "stage": "Production", "aliases": ["live"]}]}
        for kind, source in sources.items()
    ]  # fmt: skip
    models.append({"name": f"{unique_name}-dir", "versions": [{
        "source": "models/torch-export", "sha256": identity(directory), "stage": "Production",
        "aliases": ["live"], "sample_input": [[1.0, 2.0, 3.0, 4.0]]}]})  # fmt: skip
    plan = apply_converges(cli, models)
    assert "left alone: " in plan.splitlines()[-1]
    assert theirs in plan.splitlines()[-1]
    for model in models:
        version = client.get_model_version_by_alias(model["name"], "live")
        assert version.tags[SHA256_TAG] == model["versions"][0]["sha256"]
        assert version.current_stage == "Production"
    pinned = client.get_model_version_by_alias(f"{unique_name}-alias", "live")
    assert pinned.source == f"models:/{theirs}/1"  # the alias was pinned at registration
    # The directory was uploaded whole, under its relative names.
    uploaded = client.get_model_version_by_alias(f"{unique_name}-dir", "live")
    assert downloaded_identity(mlflow_server, uploaded.source) == identity(directory)
    # The team's model is untouched: no tag, its alias and its single version as they were.
    assert client.get_registered_model(theirs).tags == {}
    assert client.get_registered_model(theirs).aliases == {"champion": "1"}
    assert [v.version for v in client.search_model_versions(f"name = '{theirs}'")] == ["1"]


def test_validate_plan_apply_and_status_on_an_mlflow_2_server(
    mlflow2_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:
    """MLflow 2.7 refuses ``name IN (...)`` and answers MLflow 3's prompt filter with nothing."""
    cli = cli_against(mlflow2_server, tmp_path, capsys, monkeypatch)
    client = MlflowClient(mlflow2_server.url, registry_uri=mlflow2_server.url)
    base = cli.models_file.parent
    v1, v2 = make_onnx("two-1.onnx", seed=41), make_onnx("two-2.onnx", seed=42)
    run_id = log_artifact_run(client, make_onnx("two-run.onnx", seed=43).path)
    their_run = log_artifact_run(client, make_onnx("two-theirs.onnx", seed=44).path)
    theirs = f"{unique_name}-theirs"
    by_hand(client, theirs, f"runs:/{their_run}/model", their_run)
    directory = external_data_model(base / "models" / "torch-export", seed=4)
    runs_source = f"runs:/{run_id}/model"
    models = [
        {"name": f"{unique_name}-a", "versions": [
            version_entry(v1, base, stage="Archived"),
            version_entry(v2, base, stage="Production", aliases=["champion"]),
        ]},
        {"name": f"{unique_name}-b", "versions": [
            {"source": runs_source, "sha256": downloaded_identity(mlflow2_server, runs_source),
             "aliases": ["champion"]},
            {"source": f"models:/{theirs}@champion",
             "sha256": downloaded_identity(mlflow2_server, f"models:/{theirs}/1")},
            {"source": "models/torch-export", "sha256": identity(directory),
             "aliases": ["challenger"], "sample_input": [[0.5, 0.5, 0.5, 0.5]]},
        ]},
    ]  # fmt: skip
    plan = apply_converges(cli, models)
    assert theirs in plan.splitlines()[-1]
    assert client.get_registered_model(f"{unique_name}-a").aliases == {"champion": "2"}
    found = client.get_registered_model(f"{unique_name}-b")
    assert found.aliases == {"champion": "1", "challenger": "3"}
    assert client.get_model_version(f"{unique_name}-b", "2").source == f"models:/{theirs}/1"
    assert client.get_registered_model(theirs).tags == {}

    # status against a real server pod for the alias the sidecars follow (aliases only in -b).
    cli.write(models[1:])
    volume = tmp_path / "volume"
    publish_version(volume, f"{unique_name}-b", "1", v1.path)
    monkeypatch.setenv("RECONCILER_SERVER_TOKEN", TOKEN)
    with server_pod(volume, "127.0.0.1", free_port(), tmp_path) as pod:
        code, _, err = cli("status", "--server", pod, "--timeout", "30")
        assert code == 1
        assert "declares no version for stage Production" in err
        code, out, err = cli("status", "--server", pod, "--alias", "champion", "--timeout", "30")
        assert code == 0, err
        assert f"ok {pod} {unique_name}-b v1" in out
