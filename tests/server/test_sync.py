"""The volume -> table sync (server.sync) on real files, without a server process."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.rollout import RolloutMode
from server.errors import ModelNotFoundError, ModelNotReadyError, NoDefaultModelError
from server.holder import ModelTable
from server.load import LoadOptions
from server.sync import VolumeSync
from tests.server.volume import publish_version, unlink
from tests.support.onnx_models import write_corrupt, write_mlp


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return tmp_path / "volume"


def _sync(volume: Path, table: ModelTable, **kwargs: bool) -> VolumeSync:
    return VolumeSync(volume, table, LoadOptions(), **kwargs)


def test_empty_volume_is_not_ready(volume: Path) -> None:
    table = ModelTable()
    _sync(volume, table).sync()
    assert not table.ready()
    with pytest.raises(ModelNotReadyError):
        table.default()


def test_loads_swaps_and_keeps_old_on_failure(volume: Path, tmp_path: Path) -> None:
    table = ModelTable()
    sync = _sync(volume, table)
    publish_version(volume, "m", "1", write_mlp(tmp_path / "a.onnx", seed=1).path)
    sync.sync()
    first = table.get("m").require().current
    assert first.version == "1"
    assert first.inputs[0].describe() == "input: float32[N,16]"
    assert table.default().name == "m"

    sync.sync()  # nothing changed: the same object
    assert table.get("m").require().current is first

    publish_version(volume, "m", "2", write_corrupt(tmp_path / "bad.onnx").path)
    sync.sync()
    holder = table.get("m")
    assert holder.require().current is first
    assert "onnxruntime cannot load" in (holder.last_error or "")

    other = write_mlp(tmp_path / "wide.onnx", seed=2, n_inputs=8)
    publish_version(volume, "m", "3", other.path)
    sync.sync()
    assert holder.require().current is first  # inputs changed: refused
    assert "inputs/outputs changed" in (holder.last_error or "")

    publish_version(volume, "m", "1", first.directory / "model.onnx")  # current back to 1
    sync.sync()
    assert holder.require().current is first
    assert holder.last_error is None  # what the volume names is served: no refusal to show

    publish_version(volume, "m", "4", write_mlp(tmp_path / "b.onnx", seed=4).path)
    sync.sync()
    assert holder.require().current.version == "4"
    assert holder.last_error is None


def test_schema_change_allowed_when_configured(volume: Path, tmp_path: Path) -> None:
    table = ModelTable()
    sync = _sync(volume, table, allow_schema_change=True)
    publish_version(volume, "m", "1", write_mlp(tmp_path / "a.onnx", seed=1).path)
    sync.sync()
    publish_version(volume, "m", "2", write_mlp(tmp_path / "w.onnx", seed=2, n_inputs=8).path)
    sync.sync()
    assert table.get("m").require().current.version == "2"


def test_schema_change_acknowledged_on_the_version_is_swapped_in(
    volume: Path, tmp_path: Path
) -> None:
    """models.yaml's breaking_change_acknowledged, carried by the manifest, is the server's
    permission for that version alone: an unacknowledged change after it is refused again."""
    table = ModelTable()
    sync = _sync(volume, table)
    publish_version(volume, "m", "1", write_mlp(tmp_path / "a.onnx", seed=1).path)
    sync.sync()
    wide = write_mlp(tmp_path / "w.onnx", seed=2, n_inputs=8).path
    publish_version(volume, "m", "2", wide, breaking_change_acknowledged="clients send 8 now")
    sync.sync()
    holder = table.get("m")
    assert holder.require().current.version == "2"
    publish_version(volume, "m", "3", write_mlp(tmp_path / "n.onnx", seed=3).path)
    sync.sync()
    assert holder.require().current.version == "2"
    assert "breaking_change_acknowledged" in (holder.last_error or "")


def test_checksum_mismatch_is_refused(volume: Path, tmp_path: Path) -> None:
    table = ModelTable()
    model = write_mlp(tmp_path / "a.onnx", seed=1)
    publish_version(volume, "m", "1", model.path, sha256="0" * 64)
    _sync(volume, table).sync()
    holder = table.get("m")
    assert holder.serving is None
    assert "sha256" in (holder.last_error or "")


def test_candidate_with_rollout_then_removed(volume: Path, tmp_path: Path) -> None:
    table = ModelTable()
    sync = _sync(volume, table)
    publish_version(volume, "m", "1", write_mlp(tmp_path / "a.onnx", seed=1).path)
    rollout = {"candidate_version": "2", "mode": "canary", "weight": 25}
    publish_version(
        volume, "m", "2", write_mlp(tmp_path / "b.onnx", seed=2).path, role="candidate",
        rollout=rollout,
    )  # fmt: skip
    sync.sync()
    serving = table.get("m").require()
    assert serving.candidate is not None
    assert serving.candidate.version == "2"
    assert serving.rollout is not None
    assert serving.rollout.mode is RolloutMode.CANARY
    assert serving.rollout.weight == 25
    assert serving.versions() == ["1", "2"]

    unlink(volume, "m", "candidate")
    sync.sync()
    serving = table.get("m").require()
    assert serving.candidate is None
    assert serving.rollout is None


def test_several_models_and_removal(volume: Path, tmp_path: Path) -> None:
    table = ModelTable()
    sync = _sync(volume, table)
    publish_version(volume, "a", "1", write_mlp(tmp_path / "a.onnx", seed=1).path)
    publish_version(volume, "b", "1", write_mlp(tmp_path / "b.onnx", seed=2).path)
    sync.sync()
    assert table.names() == ["a", "b"]
    with pytest.raises(NoDefaultModelError):
        table.default()
    unlink(volume, "b", "current")
    sync.sync()
    assert table.names() == ["a"]
    with pytest.raises(ModelNotFoundError):
        table.get("b")
