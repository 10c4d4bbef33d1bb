"""The command line against a real ``mlflow server``: add-version downloads and identifies a
URI source; credentials in the tracking URI never reach the output; an error is said once."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from mlflow.tracking import MlflowClient

from contracts.digest import identity
from reconciler import spec
from reconciler.cli import main
from reconciler.state import LOCK_TAG
from tests.integration.reconciler_cli import Cli, version_entry
from tests.integration.test_reconciler import cli  # noqa: F401 (a fixture)
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.onnx_models import BuiltModel, mlp_model, write_mlp
from tests.support.processes import MlflowServer

pytestmark = pytest.mark.integration


def test_add_version_identifies_a_run_artifact_directory_as_mlflow_serves_it(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("RECONCILER_RETRIES", "1")
    artifacts = tmp_path / "export"
    artifacts.mkdir()
    onnx.save_model(
        mlp_model(seed=7), artifacts / "model.onnx", save_as_external_data=True,
        location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment(unique_name)
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(artifacts), "model")
    client.set_terminated(run.info.run_id)
    capsys.readouterr()  # MLflow's own "View run" lines for the run made here
    models = tmp_path / "models.yaml"
    models.write_text("# registry\nmodels: []\n")
    source = f"runs:/{run.info.run_id}/model"

    assert main(["add-version", "-f", str(models), "--model", unique_name, "--source", source]) == 0
    assert capsys.readouterr().out == (
        f"added to {models}: {unique_name} {source} sha256 {identity(artifacts)}\n"
    )
    [declared] = spec.load(models).file.models[0].versions
    assert (declared.source, declared.sha256) == (source, identity(artifacts))
    assert models.read_text().startswith("# registry\n")


def test_apply_with_credentials_in_the_tracking_uri_never_prints_them(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
) -> None:
    """MLflow prints "View run at <tracking URI>" when a run ends (apply's upload run)."""
    with_credentials = mlflow_server.url.replace("http://", "http://alice:s3cret@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_credentials)  # the server ignores them
    monkeypatch.setenv("RECONCILER_RETRIES", "1")
    built = write_mlp(tmp_path / "models" / "m.onnx", seed=3)
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  - name: {unique_name}\n    versions:\n      - source: models/m.onnx\n"
        f"        sha256: {built.sha256}\n"
    )
    assert main(["apply", "-f", str(models)]) == 0
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    assert "alice" not in out + err
    assert f"+ version {unique_name}" in out


def test_apply_says_each_failure_once_in_words_never_again_as_a_log_line(
    cli: Cli,  # noqa: F811 (the fixture imported above)
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
    make_onnx: Callable[..., BuiltModel],
) -> None:
    """The new-user trial read every error twice on stderr: as text, then as a JSON line."""
    base = cli.models_file.parent
    built = make_onnx("m.onnx", seed=5)
    entry = version_entry(built, base, sample_input=[[0.5, 0.5]])  # 16 features wanted
    cli.write([{"name": unique_name, "versions": [entry]}])
    code, out, err = cli("apply", "--format", "json")  # the plan on stdout, failures on stderr
    assert code == 1
    assert json.loads(out)["has_changes"]
    [failure] = [line for line in err.splitlines() if not line.startswith("{")][:-1]
    assert failure.startswith(f"FAILED: {unique_name}: not registered: ")
    assert err.count(failure.removeprefix("FAILED: ")) == 1
    assert err.splitlines()[-1] == "apply: 1 failure(s); 1 change(s) done"
    assert [line for line in _logged(err) if line["level"] == "ERROR"] == []

    # An error that stops apply: one line, saying what to do.
    lock = f"lock-{unique_name}"
    MlflowClient(tracking_uri=mlflow_server.url).create_registered_model(lock)
    monkeypatch.setenv("RECONCILER_LOCK_NAME", lock)
    cli.write([{"name": unique_name, "versions": [version_entry(built, base)]}])
    code, out, err = cli("apply")
    assert (code, out) == (1, "")
    assert [line for line in err.splitlines() if not line.startswith("{")] == [
        f"error: a registered model named {lock!r} exists and is not an apply lock (it has no "
        f"{LOCK_TAG} tag): apply never deletes it. Rename that model, or give the lock another "
        "name with RECONCILER_LOCK_NAME."
    ]
    assert [line for line in _logged(err) if line["level"] == "ERROR"] == []


def _logged(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]
