"""The volume contract's model names: one whole directory name, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.volume import VolumeError, is_valid_model_name, model_dir


@pytest.mark.parametrize("name", ["iris", "iris-v2.onnx_1", "A"])
def test_directory_names_pass(name: str) -> None:
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", ["iris\n", "", ".", "..", "-x", "a/b", "../x", "a b", "ü"])
def test_anything_else_is_refused_whole(tmp_path: Path, name: str) -> None:
    assert not is_valid_model_name(name)
    with pytest.raises(VolumeError):
        model_dir(tmp_path, name)
