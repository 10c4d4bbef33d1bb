"""Finding the ONNX file in what a source holds: a file, model.onnx, MLmodel, external data."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.download import arrange, find_model_file
from sidecar.errors import ArtifactLayoutError
from sidecar.resolve import VersionRef

REF = VersionRef(name="iris", version="1", source="s3://bucket/x")


def test_a_single_file_becomes_model_onnx(tmp_path: Path) -> None:
    (tmp_path / "dl").mkdir()
    source = tmp_path / "dl" / "iris-v1.onnx"
    source.write_bytes(b"onnx")
    target = arrange(REF, source, tmp_path / "v")
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx"]


def test_mlmodel_names_the_file_and_external_data_stays_beside_it(tmp_path: Path) -> None:
    source = tmp_path / "dl" / "model"
    source.mkdir(parents=True)
    (source / "MLmodel").write_text("flavors:\n  onnx:\n    data: net.onnx\n")
    (source / "net.onnx").write_bytes(b"onnx")
    (source / "weights.bin").write_bytes(b"data")
    (source / "other.onnx").write_bytes(b"not this one")
    target = arrange(REF, source, tmp_path / "v")
    assert (target / "model.onnx").read_bytes() == b"onnx"
    assert (target / "weights.bin").read_bytes() == b"data"


def test_a_directory_with_model_onnx_wins_over_other_onnx_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"a")
    (tmp_path / "b.onnx").write_bytes(b"b")
    assert find_model_file(REF, tmp_path).name == "model.onnx"


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"README": "x"}, "no .onnx file"),
        ({"a.onnx": "a", "b.onnx": "b"}, "2 .onnx files"),
        ({"MLmodel": "flavors:\n  sklearn: {}\n"}, "no onnx flavor"),
        ({"MLmodel": "flavors:\n  onnx:\n    data: gone.onnx\n"}, "missing"),
        ({"MLmodel": "flavors:\n  onnx:\n    data: ../../etc/passwd\n"}, "missing"),
    ],
)
def test_layouts_without_a_clear_onnx_file_are_refused(
    tmp_path: Path, files: dict[str, str], reason: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ArtifactLayoutError, match=reason):
        find_model_file(REF, tmp_path)
