"""The version identity: one file's sha256, or a directory listing's that any change alters."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts.digest import DigestError, identity


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"graph")
    (root / "sub" / "weights.data").write_bytes(b"\x00" * 10)
    return root


def test_a_file_is_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"onnx bytes")
    assert identity(path) == hashlib.sha256(b"onnx bytes").hexdigest()


def test_a_directory_matches_the_documented_shell_pipeline(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    if shutil.which("sha256sum") is None or shutil.which("find") is None:
        pytest.skip("coreutils/findutils not installed")
    shell = subprocess.run(
        "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum",
        shell=True, cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert identity(root) == shell.stdout.split()[0]


@pytest.mark.parametrize("change", ["modify", "add", "remove", "rename"])
def test_any_change_to_a_directory_changes_its_identity(tmp_path: Path, change: str) -> None:
    root = _tree(tmp_path / "m")
    before = identity(root)
    weights = root / "sub" / "weights.data"
    if change == "modify":
        weights.write_bytes(b"\x01" * 10)
    elif change == "add":
        (root / "extra.bin").write_bytes(b"")
    elif change == "remove":
        weights.unlink()
    else:
        weights.rename(root / "sub" / "weights2.data")
    assert identity(root) != before


def test_a_symlink_inside_a_directory_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    os.symlink("/etc/hostname", root / "link")
    with pytest.raises(DigestError, match="symbolic link"):
        identity(root)
