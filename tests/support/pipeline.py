"""The whole pipeline as production runs it, for scenario tests: a repository with models.yaml,
the reconciler run as CI runs it, a sidecar and a server sharing a volume."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from contracts.registry import SHA256_TAG
from tests.support.processes import MlflowServer, Process, free_port
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class DeclaredVersion:
    """One entry of ``versions:`` in models.yaml."""

    source: str
    sha256: str
    stage: str | None = None

    def as_yaml(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"source": self.source, "sha256": self.sha256}
        if self.stage:
            entry["stage"] = self.stage
        return entry


@dataclass
class Pipeline:
    """Reconciler + sidecar + server against one MLflow, in ``workdir``."""

    mlflow: MlflowServer
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    reconciler_env: Mapping[str, str] = field(default_factory=dict)
    """On top of ``env`` for the reconciler only (CI reaches S3 by its own path)."""
    interval: float = 2.0
    server_workers: int = 2
    sidecar: Process | None = None
    server: Process | None = None
    sidecar_port: int = field(default_factory=free_port)
    server_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.repo = self.workdir / "repo"
        self.volume = self.workdir / "volume"
        self.logs = self.workdir / "logs"
        for directory in (self.repo, self.volume, self.logs):
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def models_file(self) -> Path:
        return self.repo / "models.yaml"

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @property
    def sidecar_url(self) -> str:
        return f"http://127.0.0.1:{self.sidecar_port}"

    def process_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.mlflow.url, **self.env, **(extra or {})}

    # --- the repository (what a pull request edits) ---------------------------------------
    def add_file(self, path: Path, name: str | None = None) -> str:
        """Copy a model file into the repository; return its path relative to models.yaml."""
        target = self.repo / "models" / (name or path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return str(target.relative_to(self.repo))

    def declare(
        self, models: Mapping[str, Sequence[DeclaredVersion]], *, prune: bool = False
    ) -> None:
        """Write models.yaml (a commit on main, as far as the reconciler can tell)."""
        document = {
            "models": [
                {"name": name, "prune": prune, "versions": [v.as_yaml() for v in versions]}
                for name, versions in models.items()
            ]
        }
        self.models_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def reconciler(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``python -m reconciler ARGS -f models.yaml`` as CI would."""
        result = subprocess.run(
            [sys.executable, "-m", "reconciler", *args, "-f", str(self.models_file)],
            env={**os.environ, **self.process_env({"CI": "true", **self.reconciler_env})},
            cwd=self.repo, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"reconciler {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def apply(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.reconciler("apply", check=check)

    # --- the data plane ------------------------------------------------------------------------
    def start_sidecar(self, *extra_args: str, env: Mapping[str, str] | None = None) -> Process:
        self.sidecar = Process(
            "sidecar",
            [sys.executable, "-m", "sidecar", "--volume", str(self.volume),
             "--interval", str(self.interval), *extra_args],
            env=self.process_env({"SIDECAR_HTTP_PORT": str(self.sidecar_port), **(env or {})}),
            cwd=REPO_ROOT, log_dir=self.logs,
        ).start()  # fmt: skip
        return self.sidecar

    def start_server(self, env: Mapping[str, str] | None = None) -> Process:
        self.server = Process(
            "server",
            [sys.executable, "-m", "server", "--volume", str(self.volume), "--host", "127.0.0.1",
             "--port", str(self.server_port), "--workers", str(self.server_workers)],
            env={**dict(env or {})}, cwd=REPO_ROOT, log_dir=self.logs,
        ).start()  # fmt: skip
        self.server.wait_http(f"{self.server_url}/v2/health/live", timeout=120)
        return self.server

    def version_of(self, name: str, sha256: str) -> str:
        """The MLflow version number the reconciler registered for ``sha256`` (its tag)."""
        listing = httpx.get(
            f"{self.mlflow.url}/api/2.0/mlflow/model-versions/search",
            params={"filter": f"name='{name}'"},
            timeout=10,
        ).json()["model_versions"]
        for version in listing:
            tags = {t["key"]: t["value"] for t in version.get("tags", [])}
            if tags.get(SHA256_TAG) == sha256:
                return str(version["version"])
        raise AssertionError(f"no version of {name} with sha256 {sha256}: {listing}")

    def served_version(self, name: str) -> str | None:
        """The version the server reports for ``name`` (KServe V2 metadata), None if none."""
        response = httpx.get(f"{self.server_url}/v2/models/{name}", timeout=5)
        if response.status_code != 200:
            return None
        versions = response.json().get("versions") or [None]
        return str(versions[0]) if versions[0] is not None else None

    def wait_served(self, name: str, version: str, timeout: float = 90) -> None:
        wait_until(
            lambda: self.served_version(name) == version,
            timeout=timeout,
            what=f"server to serve {name} version {version}",
        )

    def predict(self, name: str, row: Sequence[float]) -> httpx.Response:
        return httpx.post(f"{self.server_url}/models/{name}/predict", json={"data": list(row)},
                          timeout=10)  # fmt: skip

    def stop(self) -> None:
        for process in (self.server, self.sidecar):
            if process is not None:
                process.stop()

    def logs_tail(self) -> str:
        parts = []
        for process in (self.sidecar, self.server):
            if process is not None:
                parts.append(f"--- {process.name} ---\n{process.log_tail(40)}")
        return "\n".join(parts)
