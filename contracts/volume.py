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
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from contracts.rollout import Rollout

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CURRENT_LINK = "current"
CANDIDATE_LINK = "candidate"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
MAX_MANIFEST_BYTES = 1 << 20

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
    rollout: Rollout | None = None
    """The model's rollout (canary/shadow) as declared in MLflow (contracts.rollout)."""
    breaking_change_acknowledged: str | None = None
    """The version's ``contracts.registry.BREAKING_CHANGE_ACKNOWLEDGED_TAG``: with it, a server
    swaps this version in even if its signature differs from the one served."""

    def to_json(self) -> str:
        data = asdict(self)
        data["rollout"] = self.rollout.to_dict() if self.rollout is not None else None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and check a manifest: every known field of its type, every file name relative
        to the version directory. Unknown fields are ignored (a newer writer).

        Raises:
            ValueError: not JSON, or a field of the wrong type or an unsafe file name.
        """
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a manifest is a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("name", "version", "sha256"):
            if key not in known:
                raise ValueError(f"{key!r} is missing")
        for key, value in known.items():
            _check_field(key, value)
        rollout = known.pop("rollout", None)
        return cls(**known, rollout=Rollout.from_dict(rollout) if rollout is not None else None)


_STRINGS = {"name", "version", "sha256", "source", "fetched_at", "role", "model_file"}
_OPTIONAL_STRINGS = {"run_id", "stage", "alias", "breaking_change_acknowledged"}


def _check_field(key: str, value: Any) -> None:
    if key in _STRINGS:
        ok = isinstance(value, str) and (bool(value) or key not in {"name", "version", "sha256"})
    elif key in _OPTIONAL_STRINGS:
        ok = value is None or isinstance(value, str)
    elif key == "size":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif key == "files":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    else:  # rollout: its rules are contracts.rollout's (Rollout.from_dict)
        ok = value is None or isinstance(value, dict)
    if not ok:
        raise ValueError(f"{key!r} has an invalid value {value!r:.80}")
    if key == "model_file" and not is_safe_relative(value):
        raise ValueError(f"model_file {value!r:.80} is not a relative path inside the version")
    if key == "files":
        unsafe = [name for name in value if not is_safe_relative(name)]
        if unsafe:
            raise ValueError(
                f"files names {unsafe[0]!r:.80}, not a relative path inside the version"
            )


def is_safe_relative(name: str) -> bool:
    """A relative POSIX path with no ``..``, no empty or ``.`` part, no backslash or NUL."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in {"", ".", ".."} for part in name.split("/"))


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
        return self.file(self.manifest.model_file)

    def file(self, relative: str) -> Path:
        """The path of a file of this version, refused unless it is a regular file inside the
        version directory (no symlink out of it, no device, no FIFO)."""
        if not is_safe_relative(relative):
            raise VolumeError(f"{relative!r:.80} is not a relative path inside the version")
        path = self.directory / relative
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(self.directory):
            raise VolumeError(f"{relative!r:.80} resolves outside its version directory")
        try:
            mode = real.stat().st_mode
        except OSError as exc:
            raise VolumeError(f"{relative!r:.80} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(mode):
            raise VolumeError(f"{relative!r:.80} is not a regular file")
        return path


def resolve(volume: Path, name: str, role: str = CURRENT_LINK) -> PublishedModel | None:
    """Resolve ``<model>/<role>`` once; None if the link does not exist (nothing published)."""
    link = link_path(volume, name, role)
    if not link.is_symlink():
        return None
    directory = Path(os.path.realpath(link))
    if not directory.is_relative_to(os.path.realpath(volume)):
        raise VolumeError(f"{link} resolves outside the volume; refused")
    manifest_path = directory / MANIFEST_FILE
    try:
        info = manifest_path.lstat()
    except FileNotFoundError as exc:
        raise VolumeError(f"{link} points at {directory}, which has no {MANIFEST_FILE}") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
        raise VolumeError(
            f"{manifest_path} is not a regular file of at most {MAX_MANIFEST_BYTES} bytes"
        )
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VolumeError(f"{manifest_path} cannot be read: {exc}") from None
    try:
        manifest = Manifest.from_json(text)
    except (ValueError, TypeError) as exc:
        raise VolumeError(f"{directory / MANIFEST_FILE} is not a valid manifest: {exc}") from exc
    return PublishedModel(directory=directory, manifest=manifest)
