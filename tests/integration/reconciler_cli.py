"""The reconciler's command line run in-process against a real MLflow, and a real server pod."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import main
from tests.support.onnx_models import BuiltModel
from tests.support.processes import MlflowServer, Process, python_module


class Cli:
    """Runs ``python -m reconciler`` in this process (fast) against one MLflow."""

    def __init__(self, capsys: pytest.CaptureFixture[str], models_file: Path) -> None:
        self.capsys = capsys
        self.models_file = models_file

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "-f", str(self.models_file)] if args[0] != "schema" else list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def write(self, models: list[dict[str, Any]]) -> None:
        self.models_file.write_text(yaml.safe_dump({"models": models}, sort_keys=False))


def cli_against(
    server: MlflowServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Cli:
    """A Cli whose models.yaml is in ``tmp_path``, talking to ``server`` as CI would."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("RECONCILER_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("RECONCILER_APPLIED_BY", "ci-bot")
    monkeypatch.setenv("RECONCILER_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    return Cli(capsys, tmp_path / "models.yaml")


def version_entry(model: BuiltModel, base: Path, **extra: Any) -> dict[str, Any]:
    return {"source": os.path.relpath(model.path, base), "sha256": model.sha256, **extra}


TOKEN = "status-test-token"


@contextmanager
def server_pod(volume: Path, host: str, port: int, log_dir: Path) -> Iterator[str]:
    """One server process (gunicorn, auth on) bound to ``host:port``: a pod of its own."""
    argv = python_module(
        "server", "--volume", str(volume), "--host", host, "--port", str(port), "--workers", "1"
    )  # fmt: skip
    env = {"SERVER_AUTH_TOKEN": TOKEN, "SERVER_RESCAN_SECONDS": "1", "SERVER_POLL_DELAY_MS": "100"}
    process = Process(f"server-{host}", argv, env=env, log_dir=log_dir).start()
    url = f"http://{host}:{port}"
    try:
        process.wait_http(f"{url}/v2/health/live", timeout=90)
        yield url
    finally:
        process.stop()


def says_no_changes(output: str) -> bool:
    """``plan``'s text says nothing to do; the only other line allowed is the one naming the
    registered models left alone (other tests' models on a shared MLflow server)."""
    lines = output.strip().splitlines()
    others = [line for line in lines if line != "No changes. MLflow matches models.yaml."]
    return len(others) < len(lines) and all(
        line.startswith("Not in models.yaml, left alone:") for line in others
    )
