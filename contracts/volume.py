"""The volume contract between the sidecar (writer) and the server (reader).

Layout::

    VOLUME/<model>/versions/<version>/<files>         the artifact's files, original relative
                                                      names (a single file: model.onnx)
    VOLUME/<model>/versions/<version>/manifest.json   Manifest below, written last
    VOLUME/<model>/current  -> versions/<version>     relative symlink, flipped with os.replace
    VOLUME/<model>/candidate -> versions/<version>    optional: canary/shadow candidate
    VOLUME/<model>/.tmp-*                             the writer's scratch space; readers skip it

A reader resolves a link once (``os.path.realpath``) and reads both files from the resolved
directory, so it never mixes two versions. Published version directories are never modified.
Stdlib only: both sides import it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CURRENT_LINK = "current"
CANDIDATE_LINK = "candidate"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A whole name (``fullmatch``: a trailing newline is refused) that is one directory name."""


class VolumeError(Exception):
    """The volume does not hold what the contract says (missing file, bad manifest)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the sidecar published; the server trusts nothing it does not say."""

    name: str
    version: str
    sha256: str
    size: int = 0
    source: str = ""
    run_id: str | None = None
    stage: str | None = None
    alias: str | None = None
    fetched_at: str = ""
    role: str = CURRENT_LINK
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of every file in the version directory but the manifest (external data too)."""
    model_file: str = MODEL_FILE
    """The ONNX file: a relative POSIX path inside the version directory (original name)."""
    rollout: dict[str, Any] | None = None
    """The model's rollout (canary/shadow) as declared in MLflow, on the current manifest."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def is_valid_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None and name not in {".", ".."}


def model_dir(volume: Path, name: str) -> Path:
    if not is_valid_model_name(name):
        raise VolumeError(f"model name {name!r} cannot be a directory name in the volume")
    return volume / name


def versions_dir(volume: Path, name: str) -> Path:
    return model_dir(volume, name) / VERSIONS_DIR


def version_dir(volume: Path, name: str, version: str) -> Path:
    return versions_dir(volume, name) / version


def link_path(volume: Path, name: str, role: str = CURRENT_LINK) -> Path:
    return model_dir(volume, name) / role


def list_models(volume: Path) -> list[str]:
    """Names of the models that have a ``current`` link, sorted."""
    if not volume.is_dir():
        return []
    return sorted(
        entry.name
        for entry in volume.iterdir()
        if is_valid_model_name(entry.name)
        and not entry.name.startswith(".")
        and (entry / CURRENT_LINK).is_symlink()
    )


@dataclass(frozen=True, slots=True)
class PublishedModel:
    """A link resolved once: the directory and the manifest read from it."""

    directory: Path
    manifest: Manifest

    @property
    def model_file(self) -> Path:
        return self.directory / MODEL_FILE


def resolve(volume: Path, name: str, role: str = CURRENT_LINK) -> PublishedModel | None:
    """Resolve ``<model>/<role>`` once; None if the link does not exist (nothing published)."""
    link = link_path(volume, name, role)
    if not link.is_symlink():
        return None
    directory = Path(os.path.realpath(link))
    try:
        text = (directory / MANIFEST_FILE).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise VolumeError(f"{link} points at {directory}, which has no {MANIFEST_FILE}") from exc
    try:
        manifest = Manifest.from_json(text)
    except (ValueError, TypeError) as exc:
        raise VolumeError(f"{directory / MANIFEST_FILE} is not a valid manifest: {exc}") from exc
    return PublishedModel(directory=directory, manifest=manifest)
