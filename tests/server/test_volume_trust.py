"""The server reads the volume only as far as its contract goes (real files, no server process).

``current`` outside the volume, manifest file names outside the version directory (``..``,
absolute, ``/dev/zero``, a symlink out), and a manifest with fields of the wrong type are each
refused with a reason, never read, and never stop the other models from loading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from contracts.volume import Manifest
from server.holder import ModelTable
from server.load import LoadOptions
from server.sync import VolumeSync
from tests.server.volume import publish_version
from tests.support.onnx_models import sha256_of, write_mlp

pytestmark = pytest.mark.timeout(60)  # /dev/zero used to hang the sync thread for ever


def _sync(volume: Path) -> ModelTable:
    table = ModelTable()
    VolumeSync(volume, table, LoadOptions(timeout_s=20)).sync()
    return table


def _edit_manifest(version_dir: Path, **changes: Any) -> None:
    path = version_dir / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    os.chmod(path, 0o644)
    path.write_text(json.dumps(data))


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A volume with a good model ``zz-good`` (sorted after every broken one below)."""
    volume = tmp_path / "volume"
    publish_version(volume, "zz-good", "1", write_mlp(tmp_path / "good.onnx", seed=1).path)
    return volume


def _assert_refused_and_good_served(table: ModelTable, name: str, words: str) -> None:
    holder = table.get(name)
    assert holder.serving is None
    assert words in (holder.last_error or ""), holder.last_error
    assert table.get("zz-good").require().current.version == "1"


def test_current_outside_the_volume_is_refused(volume: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    publish_version(outside, "m", "1", write_mlp(tmp_path / "m.onnx", seed=2).path)
    (volume / "m").mkdir()
    os.symlink(outside / "m" / "versions" / "1", volume / "m" / "current")
    _assert_refused_and_good_served(_sync(volume), "m", "outside the volume")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model_file": "../../../../etc/passwd"}, "not a relative path"),
        ({"model_file": "/etc/passwd"}, "not a relative path"),
        ({"files": {"model.onnx": "0" * 64, "/dev/zero": "0" * 64}}, "not a relative path"),
        ({"files": {"model.onnx": "0" * 64, "a/../../x": "0" * 64}}, "not a relative path"),
        ({"version": 3}, "'version' has an invalid value"),
        ({"sha256": None}, "'sha256' has an invalid value"),
        ({"files": ["model.onnx"]}, "'files' has an invalid value"),
        ({"size": "big"}, "'size' has an invalid value"),
    ],
    ids=["dotdot", "absolute", "dev-zero", "dotdot-inside", "numeric-version", "null-sha",
         "files-list", "size-text"],
)  # fmt: skip
def test_a_manifest_beyond_the_contract_is_refused(
    volume: Path, tmp_path: Path, changes: dict[str, Any], words: str
) -> None:
    directory = publish_version(volume, "a-bad", "1", write_mlp(tmp_path / "b.onnx", seed=3).path)
    _edit_manifest(directory, **changes)
    _assert_refused_and_good_served(_sync(volume), "a-bad", words)


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/hostname"])
def test_a_listed_file_that_leaves_the_version_directory_is_never_read(
    volume: Path, tmp_path: Path, target: str
) -> None:
    model = write_mlp(tmp_path / "c.onnx", seed=4)
    directory = publish_version(volume, "a-link", "1", model.path)
    os.chmod(directory, 0o755)
    os.symlink(target, directory / "weights.bin")
    _edit_manifest(directory, files={"model.onnx": model.sha256, "weights.bin": "0" * 64})
    table = _sync(volume)
    _assert_refused_and_good_served(table, "a-link", "resolves outside its version directory")
    assert "0" * 64 not in (table.get("a-link").last_error or "")


def test_a_device_inside_the_version_is_not_a_regular_file(volume: Path, tmp_path: Path) -> None:
    model = write_mlp(tmp_path / "d.onnx", seed=5)
    directory = publish_version(volume, "a-fifo", "1", model.path)
    os.chmod(directory, 0o755)
    os.mkfifo(directory / "weights.bin")  # reading it would block for ever
    _edit_manifest(directory, files={"model.onnx": model.sha256, "weights.bin": "0" * 64})
    _assert_refused_and_good_served(_sync(volume), "a-fifo", "is not a regular file")


def test_reasons_name_no_internal_path_and_no_digest(volume: Path, tmp_path: Path) -> None:
    model = write_mlp(tmp_path / "e.onnx", seed=6)
    directory = publish_version(volume, "a-corrupt", "1", model.path, sha256="f" * 64)
    table = _sync(volume)
    reason = table.get("a-corrupt").last_error or ""
    assert "sha256 of model.onnx differs" in reason
    assert str(volume) not in reason
    assert str(directory) not in reason
    assert "f" * 64 not in reason
    assert sha256_of(model.path) not in reason


def test_the_manifest_the_sidecar_writes_still_parses() -> None:
    manifest = Manifest(name="m", version="3", sha256="a" * 64, files={"model.onnx": "a" * 64})
    assert Manifest.from_json(manifest.to_json()) == manifest
