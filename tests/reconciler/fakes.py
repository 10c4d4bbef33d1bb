"""A tiny in-memory Registry (the reconciler's port on MLflow) that records every call."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contracts.registry import Stage
from reconciler.state import LOCK_TAG, ActualModel, ActualVersion, RegistryState


@dataclass
class FakeModel:
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    versions: dict[str, ActualVersion] = field(default_factory=dict)


class FakeRegistry:
    tracking_uri = "fake://registry"

    def __init__(self, files: Mapping[str, Path] | None = None) -> None:
        self.models: dict[str, FakeModel] = {}
        self.files: dict[str, Path] = dict(files or {})
        """URI -> local file, for download()."""
        self.calls: list[tuple[str, ...]] = []
        self.locks: dict[str, dict[str, str]] = {}
        self.reads = 0
        self.registered_with: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
        """(model, version) -> (source, run_id, model_id) as register_version got them."""

    # --- reading
    def read(self, names: Sequence[str]) -> RegistryState:
        self.reads += 1
        return RegistryState(
            {
                name: ActualModel(
                    name=name,
                    description=m.description,
                    tags=dict(m.tags),
                    aliases=dict(m.aliases),
                    versions=tuple(m.versions.values()),
                )
                for name, m in self.models.items()
                if name in names
            },
            others=tuple(sorted(name for name in self.models if name not in names)),
        )

    # --- writing
    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None:
        self.calls.append(("create_model", name))
        self.models[name] = FakeModel(description or "", dict(tags))

    def upload(
        self, model: str, sha256: str, local: Path, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        uri = f"mlflow-artifacts:/1/run-{sha256[:8]}/artifacts/model"
        self.files[uri] = local
        self.calls.append(("upload", model, local.name))
        return uri, f"run-{sha256[:8]}"

    def register_version(
        self,
        name: str,
        source: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str | None,
        *,
        model_id: str | None = None,
    ) -> str:
        model = self.models[name]
        number = str(len(model.versions) + 1)
        model.versions[number] = ActualVersion(
            number, source, Stage.NONE, dict(tags), description or "", run_id
        )
        self.calls.append(("register_version", name, number))
        self.registered_with[(name, number)] = (source, run_id, model_id)
        return number

    def alias_version(self, name: str, alias: str) -> str:
        return self.models[name].aliases[alias]

    def _replace(self, name: str, version: str, **changes: object) -> None:
        self.models[name].versions[version] = dataclasses.replace(
            self.models[name].versions[version],
            **changes,  # type: ignore[arg-type]
        )

    def set_stage(self, name: str, version: str, stage: Stage) -> None:
        self.calls.append(("set_stage", name, version, stage.value))
        self._replace(name, version, stage=stage)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.calls.append(("set_version_tag", name, version, key, value))
        tags = dict(self.models[name].versions[version].tags)
        tags[key] = value
        self._replace(name, version, tags=tags)

    def delete_version_tag(self, name: str, version: str, key: str) -> None:
        self.calls.append(("delete_version_tag", name, version, key))
        tags = dict(self.models[name].versions[version].tags)
        del tags[key]
        self._replace(name, version, tags=tags)

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self.calls.append(("set_model_tag", name, key, value))
        if name in self.locks:
            self.locks[name][key] = value  # the lock is a registered model too
        else:
            self.models[name].tags[key] = value

    def delete_model_tag(self, name: str, key: str) -> None:
        self.calls.append(("delete_model_tag", name, key))
        del self.models[name].tags[key]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.calls.append(("set_alias", name, alias, version))
        self.models[name].aliases[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self.calls.append(("delete_alias", name, alias))
        del self.models[name].aliases[alias]

    def set_model_description(self, name: str, description: str) -> None:
        self.calls.append(("set_model_description", name))
        self.models[name].description = description

    def set_version_description(self, name: str, version: str, description: str) -> None:
        self.calls.append(("set_version_description", name, version))
        self._replace(name, version, description=description)

    # --- artifacts
    def download_uri(self, name: str, version: str) -> str:
        return self.models[name].versions[version].source

    def download(self, uri: str, destination: Path) -> Path:
        if uri not in self.files:
            raise FileNotFoundError(uri)
        found = self.files[uri]
        if found.is_dir():
            shutil.copytree(found, destination / "model")
            return destination / "model"
        target = destination / "model.onnx"
        shutil.copyfile(found, target)
        return target

    # --- lock
    def try_lock(self, name: str, tags: Mapping[str, str]) -> bool:
        if name in self.locks or name in self.models:
            return False
        self.locks[name] = dict(tags)
        self.calls.append(("lock", name))
        return True

    def lock_tags(self, name: str) -> Mapping[str, str] | None:
        if name in self.models:
            return dict(self.models[name].tags)
        return self.locks.get(name)

    def unlock(self, name: str, token: str) -> None:
        self.calls.append(("unlock", name))
        lock = self.locks.get(name)
        if lock is not None and lock.get(LOCK_TAG) == "true" and lock.get("token") == token:
            del self.locks[name]

    def add_version(
        self, name: str, *, stage: Stage = Stage.NONE, tags: Mapping[str, str] | None = None
    ) -> str:
        """Arrange: a version registered by someone (or something) else."""
        model = self.models.setdefault(name, FakeModel())
        number = str(len(model.versions) + 1)
        model.versions[number] = ActualVersion(number, f"s3://x/{number}", stage, dict(tags or {}))
        return number
