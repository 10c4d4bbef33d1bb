"""A version that is a directory (ONNX file under its own name plus external data beside it),
as ``mlflow.onnx.log_model`` and ``torch.onnx.export`` write them: served when every listed file
verifies, refused when one does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from server.holder import ModelTable
from server.load import LoadOptions
from server.sync import VolumeSync
from tests.server.volume import publish_directory
from tests.support.onnx_models import mlp_model, sha256_of


def _artifact(root: Path) -> Path:
    """``onnx/net.onnx`` whose weights live in ``onnx/net.onnx.data`` (external data)."""
    directory = root / "artifact"
    (directory / "onnx").mkdir(parents=True)
    onnx.save(
        mlp_model(seed=9),
        directory / "onnx" / "net.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="net.onnx.data",
        size_threshold=0,
    )
    assert (directory / "onnx" / "net.onnx.data").stat().st_size > 1000
    return directory


def _table(volume: Path) -> ModelTable:
    table = ModelTable()
    VolumeSync(volume, table, LoadOptions()).sync()
    return table


def test_a_directory_version_is_served_from_its_model_file(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    volume = tmp_path / "volume"
    publish_directory(volume, "net", "1", artifact, "onnx/net.onnx")
    model = _table(volume).get("net").require().current
    rows = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    session = ort.InferenceSession(
        str(artifact / "onnx" / "net.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_array_equal(
        model.run({"input": rows})[0], session.run(None, {"input": rows})[0]
    )


def test_tampered_external_data_is_refused(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    volume = tmp_path / "volume"
    directory = publish_directory(volume, "net", "1", artifact, "onnx/net.onnx")
    data = directory / "onnx" / "net.onnx.data"
    data.chmod(0o644)
    data.write_bytes(b"\0" * data.stat().st_size)
    holder = _table(volume).get("net")
    assert holder.serving is None
    assert "sha256 of onnx/net.onnx.data differs" in (holder.last_error or "")


def test_a_model_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    volume = tmp_path / "volume"
    publish_directory(
        volume, "net", "1", artifact, "onnx/net.onnx", files={"onnx/net.onnx.data": "0" * 64}
    )
    holder = _table(volume).get("net")
    assert holder.serving is None
    assert "do not list its model_file 'onnx/net.onnx'" in (holder.last_error or "")


def test_an_unlisted_file_beside_the_model_is_refused(tmp_path: Path) -> None:
    artifact = _artifact(tmp_path)
    (artifact / "onnx" / "extra.data").write_bytes(b"not verified")
    volume = tmp_path / "volume"
    listed = {
        "onnx/net.onnx": sha256_of(artifact / "onnx" / "net.onnx"),
        "onnx/net.onnx.data": sha256_of(artifact / "onnx" / "net.onnx.data"),
    }
    publish_directory(volume, "net", "1", artifact, "onnx/net.onnx", files=listed)
    holder = _table(volume).get("net")
    assert holder.serving is None
    assert "does not list: onnx/extra.data" in (holder.last_error or "")
