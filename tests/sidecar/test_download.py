"""Verifying what a source holds (a file, a directory: every file counts) and finding its ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contracts.digest import identity
from sidecar.download import arrange, verify_artifact
from sidecar.errors import ArtifactLayoutError, VerificationError
from sidecar.resolve import VersionRef

REF = VersionRef(name="iris", version="1", source="s3://bucket/x", sha256="0" * 64)
BOUNDS = {"max_bytes": 1 << 20, "max_files": 10}


def _ref(path: Path, **kw: object) -> VersionRef:
    return VersionRef(name="iris", version="1", source="s3://bucket/x", sha256=identity(path),
                      **kw)  # type: ignore[arg-type]  # fmt: skip


def _logged_model(directory: Path) -> Path:
    """What ``mlflow.onnx.log_model`` stores: MLmodel, model.onnx, external data, env files."""
    directory.mkdir(parents=True)
    (directory / "MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    (directory / "model.onnx").write_bytes(b"graph")
    (directory / "model.onnx.data").write_bytes(b"weights")
    (directory / "requirements.txt").write_text("onnx\n")
    return directory


def test_a_single_file_is_published_as_model_onnx(tmp_path: Path) -> None:
    (tmp_path / "dl").mkdir()
    source = tmp_path / "dl" / "iris-v1.onnx"
    source.write_bytes(b"onnx")
    digest = identity(source)
    artifact = verify_artifact(_ref(source, size=4), source, **BOUNDS)
    target = arrange(artifact, tmp_path / "v")
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx"]
    assert artifact.files == {"model.onnx": digest}
    assert artifact.model_file == "model.onnx"


def test_a_logged_model_directory_is_verified_whole_and_keeps_its_names(tmp_path: Path) -> None:
    source = _logged_model(tmp_path / "dl" / "artifacts")
    ref = _ref(source)
    artifact = verify_artifact(ref, source, **BOUNDS)
    target = arrange(artifact, tmp_path / "v")
    assert sorted(artifact.files) == [
        "MLmodel", "model.onnx", "model.onnx.data", "requirements.txt",
    ]  # fmt: skip
    assert artifact.model_file == "model.onnx"
    assert (target / "model.onnx.data").read_bytes() == b"weights"
    assert identity(target) == ref.sha256


@pytest.mark.parametrize("tamper", ["change", "add", "remove"])
def test_a_changed_extra_or_missing_file_is_refused(tmp_path: Path, tamper: str) -> None:
    source = _logged_model(tmp_path / "dl" / "artifacts")
    ref = _ref(source)
    if tamper == "change":
        (source / "model.onnx.data").write_bytes(b"other weights")
    elif tamper == "add":
        (source / "extra.bin").write_bytes(b"x")
    else:
        (source / "requirements.txt").unlink()
    with pytest.raises(VerificationError, match="identity"):
        verify_artifact(ref, source, **BOUNDS)


def test_a_directory_of_one_onnx_file_may_carry_that_file_s_sha256(tmp_path: Path) -> None:
    source = tmp_path / "dl" / "model"
    source.mkdir(parents=True)
    (source / "model.onnx").write_bytes(b"onnx")
    ref = _ref(source / "model.onnx")  # how the reconciler registers a repository file
    artifact = verify_artifact(ref, source, **BOUNDS)
    assert artifact.files == {"model.onnx": ref.sha256}


@pytest.mark.parametrize(
    ("files", "limit", "reason"),
    [
        ({f"f{i}.bin": "x" for i in range(11)} | {"model.onnx": "m"}, {}, "more than the limit 10"),
        ({"model.onnx": "m" * 2000}, {"max_bytes": 1000}, "2000 bytes, more than the limit"),
        ({"model.onnx": "m", "manifest.json": "{}"}, {}, "reserves"),
    ],
)
def test_artifacts_beyond_the_bounds_are_refused(
    tmp_path: Path, files: dict[str, str], limit: dict[str, int], reason: str
) -> None:
    source = tmp_path / "dl"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    with pytest.raises(ArtifactLayoutError, match=reason):
        verify_artifact(_ref(source), source, **{**BOUNDS, **limit})


def test_a_symlink_in_the_artifact_is_refused(tmp_path: Path) -> None:
    source = _logged_model(tmp_path / "dl")
    os.symlink("/etc/passwd", source / "passwd")
    with pytest.raises(ArtifactLayoutError, match="symbolic link"):
        verify_artifact(REF, source, **BOUNDS)


def test_a_directory_with_model_onnx_wins_over_other_onnx_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"a")
    (tmp_path / "b.onnx").write_bytes(b"b")
    assert verify_artifact(_ref(tmp_path), tmp_path, **BOUNDS).model_file == "model.onnx"


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
        verify_artifact(_ref(tmp_path), tmp_path, **BOUNDS)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("mlflow-artifacts:/0/abc/artifacts/model", "0/abc/artifacts/model"),
        ("mlflow-artifacts://mlflow:5000/0/abc/artifacts", "0/abc/artifacts"),
        ("mlflow-artifacts:/0/../../etc", None),
        ("s3://bucket/model.onnx", None),
        ("mlflow-artifacts:/", None),
    ],
)
def test_only_safe_proxied_paths_are_fetched_over_http(uri: str, path: str | None) -> None:
    from sidecar.proxy import ProxyFetcher

    assert ProxyFetcher._path_of(uri) == path
