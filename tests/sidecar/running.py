"""Run the real sidecar (``python -m sidecar``) for integration tests, and read what it did."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from contracts.digest import file_digests, listing_digest
from contracts.volume import MANIFEST_FILE, TMP_PREFIX, VolumeError, resolve
from tests.support.processes import MlflowServer, Process, free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "sidecar-test-secret"


def verified_version(volume: Path, model: str, role: str = "current") -> str | None:
    """The version ``<model>/<role>`` points at, after checking its files against the manifest."""
    try:
        published = resolve(volume, model, role)
    except (VolumeError, FileNotFoundError):
        return None
    if published is None:
        return None
    manifest = published.manifest
    on_disk = {r: d for r, d in file_digests(published.directory).items() if r != MANIFEST_FILE}
    assert on_disk == manifest.files, f"{published.directory} does not match its manifest"
    assert manifest.model_file in on_disk
    assert manifest.sha256 in {listing_digest(on_disk), *on_disk.values()}
    return manifest.version


def leftovers(volume: Path, model: str) -> list[str]:
    directory = volume / model
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TMP_PREFIX))


@dataclass
class RunningSidecar:
    process: Process
    volume: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthz(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        return result

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def wait_version(
        self, model: str, version: str, *, timeout: float = 60, role: str = "current"
    ) -> None:
        def published() -> bool:
            if not self.process.is_running():
                raise AssertionError(f"the sidecar exited:\n{self.process.log_tail()}")
            return verified_version(self.volume, model, role) == version

        try:
            wait_until(
                published, timeout=timeout, interval=0.05, what=f"{model} {role} -> {version}"
            )
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n--- sidecar log ---\n{self.process.log_tail()}") from None

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")


@dataclass
class SidecarRunner:
    """Starts sidecars against one MLflow; :meth:`stop_all` stops every one it started."""

    workdir: Path
    tracking_uri: str
    env: Mapping[str, str] = field(default_factory=dict)
    started: list[Process] = field(default_factory=list)

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "SIDECAR_HTTP_HOST": "127.0.0.1",
            **self.env,
            **(extra or {}),
        }

    def _argv(self, volume: Path, models: Sequence[str], args: Sequence[str]) -> list[str]:
        model_args = [arg for name in models for arg in ("--model", name)]
        return [sys.executable, "-m", "sidecar", "--volume", str(volume), *model_args, *args]

    def once(
        self, volume: Path, models: Sequence[str], *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(volume, models, ["--once", *args]),
            env={**_base_env(), **self._env(env)},
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    def start(
        self,
        volume: Path,
        models: Sequence[str],
        *args: str,
        interval: float,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> RunningSidecar:
        port = port or free_port()
        process = Process(
            f"sidecar-{uuid.uuid4().hex[:6]}",
            self._argv(volume, models, ["--interval", str(interval), *args]),
            env=self._env(
                {"SIDECAR_HTTP_PORT": str(port), "SIDECAR_HTTP_HOST": host, **(env or {})}
            ),
            cwd=REPO_ROOT,
            log_dir=self.workdir,
        ).start()
        self.started.append(process)
        process.wait_http(f"http://{host}:{port}/healthz", timeout=120)
        return RunningSidecar(process=process, volume=volume, port=port, host=host)

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}


def create_webhook(mlflow: MlflowServer, url: str) -> str:
    """A real MLflow webhook on the tag/alias/version events the sidecar listens to."""
    response = httpx.post(
        f"{mlflow.url}/api/2.0/mlflow/webhooks",
        json={
            "name": f"sidecar-{uuid.uuid4().hex[:6]}",
            "url": url,
            "events": [
                {"entity": "MODEL_VERSION_TAG", "action": "SET"},
                {"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"},
            ],
            "secret": WEBHOOK_SECRET,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["webhook"]["webhook_id"])


def delete_webhook(mlflow: MlflowServer, webhook_id: str) -> None:
    httpx.delete(f"{mlflow.url}/api/2.0/mlflow/webhooks/{webhook_id}", timeout=10)
