"""The command line without MLflow: exit codes and messages people and CI read."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import spec
from reconciler.cli import main
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.processes import free_port


def test_unreachable_mlflow_is_retried_then_reported_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.setenv("RECONCILER_RETRIES", "2")
    monkeypatch.setenv("RECONCILER_BACKOFF_SECONDS", "0.01")
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: m\n    versions: []\n")
    assert main(["plan", "-f", str(models)]) == 1
    err = capsys.readouterr().err
    assert "error: MLflow failed searching registered models 3 time(s), giving up" in err
    assert "Check MLFLOW_TRACKING_URI" in err
    assert "Traceback" not in err


def test_schema_command_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == spec.json_schema()


def test_invalid_file_exits_1_with_located_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: m\n    versoins: []\n")
    assert main(["plan", "-f", str(models)]) == 1
    assert f"{models}:3: models[0].versoins: unknown field" in capsys.readouterr().err
