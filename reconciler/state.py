"""The live registry as read from MLflow (values), and the narrow Registry port the rest uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG, TAG_PREFIX, Stage

LOCK_TAG = f"{TAG_PREFIX}apply-lock"
"""Marks the registered model that is the apply lock: only such a model is ever deleted."""

RESERVED_TAG_PREFIXES = (TAG_PREFIX, "mlflow.")
"""Tags the reconciler writes for itself or MLflow writes: never diffed as user tags."""


@dataclass(frozen=True, slots=True)
class ActualVersion:
    version: str
    source: str
    stage: Stage
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    run_id: str | None = None

    @property
    def number(self) -> int:
        return int(self.version)

    @property
    def sha256(self) -> str | None:
        """The identity the reconciler wrote; None for a version it does not manage."""
        return self.tags.get(SHA256_TAG)

    @property
    def user_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if not k.startswith(RESERVED_TAG_PREFIXES)}


@dataclass(frozen=True, slots=True)
class ActualModel:
    name: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    """alias -> version number."""
    versions: tuple[ActualVersion, ...] = ()

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_TAG) == "true"

    @property
    def user_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if not k.startswith(RESERVED_TAG_PREFIXES)}

    def by_sha256(self) -> dict[str, ActualVersion]:
        """Managed versions by sha256; if one was registered twice the oldest is the one."""
        found: dict[str, ActualVersion] = {}
        for version in sorted(self.versions, key=lambda v: v.number):
            if version.sha256 is not None:
                found.setdefault(version.sha256, version)
        return found

    def version(self, number: str) -> ActualVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    def moved_off_production(self, sha256: str) -> bool:
        """Whether the version ``sha256`` is the one apply last made Production (its stage tag
        says so) and MLflow's stage was moved off it since (by hand): putting it back undoes
        drift, a return to what clients had, not a new version for them."""
        found = self.by_sha256().get(sha256)
        return (
            found is not None
            and found.stage is not Stage.PRODUCTION
            and found.tags.get(STAGE_TAG) == Stage.PRODUCTION.value
        )


@dataclass(frozen=True, slots=True)
class RegistryState:
    """What MLflow holds for the models models.yaml names (absent ones are simply missing)."""

    models: Mapping[str, ActualModel] = field(default_factory=dict)
    others: tuple[str, ...] = ()
    """Registered models models.yaml does not name (not the lock, not prompts): left alone."""


class Registry(Protocol):
    """The MLflow operations the reconciler needs (MlflowRegistry; tiny fakes in unit tests)."""

    tracking_uri: str

    def read(self, names: Sequence[str]) -> RegistryState: ...

    def create_model(self, name: str, description: str | None, tags: Mapping[str, str]) -> None: ...

    def upload(
        self, model: str, sha256: str, local: Path, tags: Mapping[str, str]
    ) -> tuple[str, str]:
        """Upload a repository file (as ``model/model.onnx``) or directory (as ``model/``, its
        files under their relative names) into a new run: (source, run_id)."""
        ...

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
        """Create a model version; return its number."""
        ...

    def alias_version(self, name: str, alias: str) -> str:
        """The version number ``alias`` of ``name`` points at now."""
        ...

    def set_stage(self, name: str, version: str, stage: Stage) -> None: ...

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...

    def delete_version_tag(self, name: str, version: str, key: str) -> None: ...

    def set_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_model_tag(self, name: str, key: str) -> None: ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def set_model_description(self, name: str, description: str) -> None: ...

    def set_version_description(self, name: str, version: str, description: str) -> None: ...

    def download(self, uri: str, destination: Path) -> Path:
        """Fetch an artifact URI (file or directory) into destination; return the local path."""
        ...

    def download_uri(self, name: str, version: str) -> str: ...

    def try_lock(self, name: str, tags: Mapping[str, str]) -> bool:
        """Create the lock (a registered model); False if it exists already."""
        ...

    def lock_tags(self, name: str) -> Mapping[str, str] | None:
        """The tags of the registered model named ``name``; None if there is none."""
        ...

    def unlock(self, name: str, token: str) -> None:
        """Delete the lock if it is still the one ``token`` took (a lock-tagged model with no
        versions); anything else under that name is left alone."""
        ...
