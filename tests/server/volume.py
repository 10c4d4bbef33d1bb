"""Write the volume the way the sidecar does (tests only): version dir, manifest, atomic flip."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from contracts.rollout import Rollout
from contracts.volume import (
    CURRENT_LINK,
    MANIFEST_FILE,
    MODEL_FILE,
    TMP_PREFIX,
    VERSIONS_DIR,
    Manifest,
    link_path,
    model_dir,
    version_dir,
)
from tests.support.onnx_models import sha256_of


def publish_version(
    volume: Path,
    name: str,
    version: str,
    model_file: Path,
    *,
    role: str = CURRENT_LINK,
    sha256: str | None = None,
    rollout: dict[str, Any] | None = None,
    breaking_change_acknowledged: str | None = None,
) -> Path:
    """Copy ``model_file`` into ``versions/<version>`` (via scratch + rename), then flip ``role``.

    ``sha256`` overrides the manifest's checksum (to publish a lying manifest).
    """
    target = version_dir(volume, name, version)
    if not target.exists():
        scratch = model_dir(volume, name) / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
        scratch.mkdir(parents=True)
        shutil.copyfile(model_file, scratch / MODEL_FILE)
        digest = sha256 or sha256_of(scratch / MODEL_FILE)
        manifest = Manifest(
            name=name,
            version=version,
            sha256=digest,
            size=(scratch / MODEL_FILE).stat().st_size,
            source=str(model_file),
            role=role,
            rollout=Rollout.from_dict(rollout) if rollout is not None else None,
            breaking_change_acknowledged=breaking_change_acknowledged,
        )
        (scratch / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, target)
    flip(volume, name, version, role)
    return target


def flip(volume: Path, name: str, version: str, role: str = CURRENT_LINK) -> None:
    """Point ``<name>/<role>`` at ``versions/<version>`` with one rename."""
    link = link_path(volume, name, role)
    temporary = link.with_name(f"{TMP_PREFIX}link-{uuid.uuid4().hex[:8]}")
    os.symlink(f"{VERSIONS_DIR}/{version}", temporary)
    os.replace(temporary, link)


def unlink(volume: Path, name: str, role: str) -> None:
    link_path(volume, name, role).unlink()


def publish_directory(
    volume: Path,
    name: str,
    version: str,
    source: Path,
    model_file: str,
    *,
    files: dict[str, str] | None = None,
) -> Path:
    """Publish every file under ``source`` (an artifact directory: ONNX plus external data)
    as ``versions/<version>``, the manifest listing each file's sha256 (``files`` overrides)."""
    scratch = model_dir(volume, name) / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, scratch)
    listed = files or {
        path.relative_to(scratch).as_posix(): sha256_of(path)
        for path in sorted(scratch.rglob("*"))
        if path.is_file()
    }
    manifest = Manifest(
        name=name, version=version, sha256=listed.get(model_file, "0" * 64), source=str(source),
        files=listed, model_file=model_file,
    )  # fmt: skip
    (scratch / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    target = version_dir(volume, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(scratch, target)
    flip(volume, name, version)
    return target
