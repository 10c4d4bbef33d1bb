"""Real processes for integration tests: each in its own process group, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.support.waiting import GiveUp, wait_until


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="mlgitops-logs-"))
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill_process_only(self, signum: int = signal.SIGKILL) -> None:
        """Signal the leader alone (a SIGKILL'd master leaves its children, as in production)."""
        if self.is_running():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, url: str, *, timeout: float = 120.0) -> None:
        def ready() -> bool:
            if not self.is_running():
                raise GiveUp(f"{self.name} exited:\n{self.log_tail()}")
            return httpx.get(url, timeout=2.0).status_code == 200

        try:
            wait_until(ready, timeout=timeout, interval=0.2, what=f"{self.name} at {url}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- {self.name} log ---\n{self.log_tail()}") from None


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def bin_path(tool: str) -> str:
    """A console script installed beside this interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / tool)


# A fixed key so stored webhook secrets survive an MLflow restart (see FIELD-NOTES).
WEBHOOK_ENCRYPTION_KEY = "bWxnaXRvcHMtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE="


class MlflowServer:
    """A real ``mlflow server`` on a free loopback port; restartable for outage tests.

    ``venv`` runs the ``mlflow`` of another virtual environment (an older MLflow, e.g.
    ``.venv-mlflow2``) instead of the project's.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        venv: Path | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}"
        self.artifacts_destination = artifacts_destination or str(workdir / "artifacts")
        self.env = {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_ENCRYPTION_KEY,
            # Subscriptions are cached (60 s by default; even 1 s races a test that creates a
            # webhook right after an event filled the cache): 0 reads them on every event.
            "MLFLOW_WEBHOOK_CACHE_TTL": "0",
            **(env or {}),
        }
        self.mlflow_bin = bin_path("mlflow") if venv is None else str(venv / "bin" / "mlflow")
        if venv is not None:
            # MLflow 2.x execs ``gunicorn`` by name: its own venv must come first on PATH.
            self.env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        self.process: Process | None = None

    def start(self, *, timeout: float = 180.0) -> MlflowServer:
        argv = [
            self.mlflow_bin, "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", self.artifacts_destination,
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        self.process = Process(
            "mlflow-server", argv, env=self.env, cwd=self.workdir, log_dir=self.workdir
        ).start()
        self.process.wait_http(f"{self.url}/health", timeout=timeout)
        # /health answers before the API does on a cold start: wait for a real API call.
        wait_until(
            lambda: (
                httpx.get(
                    f"{self.url}/api/2.0/mlflow/registered-models/search", timeout=5.0
                ).status_code
                == 200
            ),
            timeout=timeout,
            what="the MLflow REST API",
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def version(self) -> str:
        """The MLflow version the running server reports (``GET /version``)."""
        response = httpx.get(f"{self.url}/version", timeout=10.0)
        response.raise_for_status()
        return response.text.strip()


class MotoS3Server:
    """moto's server mode: a real HTTP S3 endpoint standing in for DigitalOcean Spaces."""

    ACCESS_KEY = "testing"
    SECRET_KEY = "testing"
    REGION = "us-east-1"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for anything that talks S3 to this endpoint (MLflow, boto3, sidecar)."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
        }

    def start(self) -> MotoS3Server:
        workdir = self.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            "moto-server",
            [bin_path("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            log_dir=workdir,
        ).start()
        self.process.wait_http(f"{self.url}/moto-api/", timeout=60.0)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.ACCESS_KEY,
            aws_secret_access_key=self.SECRET_KEY,
            region_name=self.REGION,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put_object(self, bucket: str, key: str, body: bytes) -> str:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"
