"""The command line without MLflow: exit codes and messages people and CI read."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from reconciler import spec
from reconciler.cli import main
from reconciler.errors import RegistryUnavailableError
from reconciler.logs import configure
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]


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
    assert "error: MLflow failed asking the MLflow server's version 3 time(s), giving up" in err
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


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"RECONCILER_RETRIES": "abc", "RECONCILER_BACKOFF_SECONDS": "-1"},
            "error: invalid settings: RECONCILER_RETRIES: Input should be a valid integer, "
            "unable to parse string as an integer; RECONCILER_BACKOFF_SECONDS: Input should be "
            "greater than 0\n",
        ),
        (
            {"RECONCILER_LOG_LEVEL": "loud"},
            "error: invalid settings: RECONCILER_LOG_LEVEL: 'loud' is not one of DEBUG, INFO, "
            "WARNING, ERROR\n",
        ),
    ],
)
def test_bad_settings_exit_1_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["schema"]) == 1
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file or directory"),
        ("garbage", "not JSON (line 1: Expecting value)"),
        ('{"format_version": 1}', "not a saved plan (KeyError: 'changes')"),
    ],
)
def test_a_bad_saved_plan_exits_1_without_a_traceback(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: str | None,
    expected: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: m\n    versions: []\n")
    saved = tmp_path / "plan.json"
    if content is not None:
        saved.write_text(content)
    assert main(["apply", "-f", str(models), "--plan", str(saved)]) == 1
    err = capsys.readouterr().err
    assert f"error: cannot use the saved plan {saved}: {expected}. Save one with" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["plan", "--formt", "json"], [], ["plan", "--format", "yaml"]])
def test_a_usage_error_exits_1_not_2_which_means_changes(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    assert "python -m reconciler" in capsys.readouterr().err


def test_credentials_in_the_tracking_uri_never_reach_errors_logs_or_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("RECONCILER_RETRIES", "0")
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: m\n    versions: []\n")
    assert main(["plan", "-f", str(models)]) == 1
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    assert "alice" not in out + err
    # MLflow's own exception text, quoted in the error (said once, not again as a log line):
    assert err.count(f"API request to http://***@127.0.0.1:{port}/version failed") == 1
    assert not [line for line in err.splitlines() if line.startswith("{")]


def test_an_error_is_said_once_in_words_by_the_command_itself(tmp_path: Path) -> None:
    """A real ``python -m reconciler`` run: one line that says what went wrong and what to
    do, not that line again as a JSON log line."""
    models = tmp_path / "models.yaml"
    models.write_text("models: []\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ran = subprocess.run(
        [sys.executable, "-m", "reconciler", "add-version", "-f", str(models), "--model", "m",
         "--source", "missing.onnx"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (ran.returncode, ran.stdout) == (1, "")
    assert ran.stderr == (
        "error: cannot read source missing.onnx: not found (relative to the current directory)\n"
    )


def test_log_lines_mask_messages_extras_tracebacks_and_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("INFO")
    log = logging.getLogger("reconciler.test")
    uri = "http://bob:hunter2@mlflow:5000/api"
    try:
        raise ConnectionError(f"cannot reach {uri}")
    except ConnectionError as exc:
        log.exception("failed at %s", uri, extra={"cause": exc, "uris": [uri]})
    log.warning("retrying", extra={"error": str(RegistryUnavailableError("x", 1, OSError(uri)))})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated endpoint {uri}", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "hunter2" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert lines[0]["message"] == "failed at http://***@mlflow:5000/api"
    assert lines[0]["cause"] == "cannot reach http://***@mlflow:5000/api"
    assert lines[0]["uris"] == ["http://***@mlflow:5000/api"]
    assert "ConnectionError: cannot reach http://***@mlflow:5000/api" in lines[0]["exc"]
    assert "http://***@mlflow:5000/api" in lines[1]["error"]
    assert lines[2]["logger"] == "py.warnings"
    assert "deprecated endpoint http://***@mlflow:5000/api" in lines[2]["message"]
