"""Tiny fakes behind the sidecar's Protocols: a registry in a dict, a fetcher copying files."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from contracts.rollout import Rollout
from sidecar.errors import NothingToServeError
from sidecar.resolve import RegisteredModel, VersionRef
from tests.support.onnx_models import sha256_of


@dataclass
class FakeRegistry:
    """Versions by (model, version); ``production[model]`` names the served version."""

    versions: dict[tuple[str, str], VersionRef] = field(default_factory=dict)
    production: dict[str, str] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    managed: dict[str, bool] = field(default_factory=dict)
    """Registered models' mlgitops.managed tag (absent: managed)."""
    mlflow_version: str = "3.17.2"
    down: bool = False

    def add(
        self, name: str, version: str, path: Path, *, sha256: str | None = None,
        production: bool = False,
    ) -> VersionRef:  # fmt: skip
        ref = VersionRef(
            name=name, version=version, source=str(path),
            sha256=sha256 or sha256_of(path), size=path.stat().st_size,
        )  # fmt: skip
        self.versions[(name, version)] = ref
        if production:
            self.production[name] = version
        return ref

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("MLflow is down (fake)")

    def server_version(self) -> str:
        self._check()
        return self.mlflow_version

    def registered_models(self) -> list[RegisteredModel]:
        self._check()
        names = sorted({name for name, _ in self.versions})
        return [RegisteredModel(name, self.managed.get(name, True)) for name in names]

    def target(self, name: str, *, stage: str, alias: str | None) -> VersionRef:
        self._check()
        if name not in self.production:
            raise NothingToServeError(name, f"stage {stage}")
        return replace(self.versions[(name, self.production[name])], stage=stage)

    def version(self, name: str, version: str) -> VersionRef:
        self._check()
        return self.versions[(name, version)]

    def rollout(self, name: str) -> Rollout | None:
        self._check()
        return self.rollouts.get(name)


@dataclass
class FakeFetcher:
    """Copies ``ref.source`` (a local file or directory); can fail on demand."""

    fail: BaseException | None = None
    calls: list[str] = field(default_factory=list)

    def fetch(self, ref: VersionRef, dest: Path) -> Path:
        self.calls.append(ref.version)
        if self.fail is not None:
            raise self.fail
        source = Path(ref.source)
        dest.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest / source.name)
            return dest / source.name
        shutil.copyfile(source, dest / source.name)
        return dest / source.name
