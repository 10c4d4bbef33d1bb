"""The loop in the registry companies have: directories, other teams' models, refusals, repairs."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import pytest

from contracts.digest import identity
from contracts.volume import link_path, resolve, versions_dir
from sidecar.errors import ServerTooOldError
from sidecar.loop import Sidecar
from sidecar.settings import SidecarSettings
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.support.onnx_models import write_mlp

MODEL = "iris"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logged_model(directory: Path, seed: int = 1) -> Path:
    """A directory as ``mlflow.onnx.log_model`` stores it: MLmodel, ONNX, external data, env."""
    write_mlp(directory / "model.onnx", seed=seed)
    (directory / "MLmodel").write_text("flavors:\n  onnx:\n    data: model.onnx\n")
    (directory / "model.onnx.data").write_bytes(os.urandom(64))
    (directory / "python_env.yaml").write_text("python: 3.11\n")
    return directory


def sidecar_for(volume: Path, registry: FakeRegistry, **kw: object) -> tuple[Sidecar, Clock]:
    clock = Clock()
    settings = SidecarSettings(volume=volume, http_port=0, **kw)  # type: ignore[arg-type]
    return Sidecar(settings, registry, FakeFetcher(), clock=clock), clock


def test_a_logged_model_directory_is_published_whole_under_its_names(tmp_path: Path) -> None:
    source = logged_model(tmp_path / "src" / "artifacts")
    registry = FakeRegistry()
    registry.add(MODEL, "1", source, sha256=identity(source), production=True)
    sidecar, _ = sidecar_for(tmp_path / "volume", registry, models=[MODEL])

    assert sidecar.run_once()

    published = resolve(tmp_path / "volume", MODEL)
    assert published is not None
    manifest = published.manifest
    assert manifest.model_file == "model.onnx"
    assert sorted(manifest.files) == ["MLmodel", "model.onnx", "model.onnx.data", "python_env.yaml"]
    assert sorted(p.name for p in published.directory.iterdir()) == sorted(
        [*manifest.files, "manifest.json"]
    )
    shutil.move(published.directory / "manifest.json", tmp_path / "manifest.json")
    assert identity(published.directory) == manifest.sha256 == identity(source)


@pytest.mark.parametrize("tamper", ["change weights", "add a file", "remove a file"])
def test_tampering_with_a_directory_version_is_refused_and_the_previous_keeps_serving(
    tmp_path: Path, tamper: str
) -> None:
    v1 = logged_model(tmp_path / "src" / "v1", seed=1)
    v2 = logged_model(tmp_path / "src" / "v2", seed=2)
    registry = FakeRegistry()
    registry.add(MODEL, "1", v1, sha256=identity(v1), production=True)
    registry.add(MODEL, "2", v2, sha256=identity(v2))
    sidecar, _ = sidecar_for(tmp_path / "volume", registry, models=[MODEL])
    assert sidecar.sync_all()
    if tamper == "change weights":
        (v2 / "model.onnx.data").write_bytes(b"other weights")
    elif tamper == "add a file":
        (v2 / "extra.bin").write_bytes(b"x")
    else:
        (v2 / "python_env.yaml").unlink()

    registry.production[MODEL] = "2"
    sidecar.sync_all()

    assert os.readlink(link_path(tmp_path / "volume", MODEL)) == "versions/1"
    assert sidecar.status.model(MODEL).last_error == "verification_failed"
    assert not versions_dir(tmp_path / "volume", MODEL).joinpath("2").exists()


def test_another_team_s_model_is_skipped_counted_logged_once_and_never_unready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", write_mlp(tmp_path / "a.onnx").path, production=True)
    theirs = registry.add("their-model", "1", write_mlp(tmp_path / "b.onnx", seed=2).path,
                          production=True)  # fmt: skip
    registry.versions[("their-model", "1")] = dataclasses.replace(theirs, sha256=None, size=None)
    registry.managed["their-model"] = False
    sidecar, _ = sidecar_for(tmp_path / "volume", registry)

    with caplog.at_level(logging.INFO, logger="sidecar.loop"):
        assert sidecar.sync_all()
        assert sidecar.sync_all()

    assert sidecar.status.ready()
    assert resolve(tmp_path / "volume", "their-model") is None
    assert resolve(tmp_path / "volume", MODEL) is not None
    assert "their-model" not in sidecar.status.errors()
    skipped = [r for r in caplog.records if getattr(r, "event", None) == "unmanaged"]
    assert len(skipped) == 1
    assert "sidecar_unmanaged_models 1.0" in sidecar.metrics.render().decode()


def test_a_version_that_cannot_be_verified_blocks_no_other_model(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", write_mlp(tmp_path / "a.onnx").path, production=True)
    registry.add("broken", "1", write_mlp(tmp_path / "b.onnx", seed=2).path, sha256="0" * 64,
                 production=True)  # fmt: skip
    sidecar, _ = sidecar_for(tmp_path / "volume", registry)

    assert sidecar.sync_all()

    assert resolve(tmp_path / "volume", MODEL) is not None
    assert resolve(tmp_path / "volume", "broken") is None
    assert sidecar.status.errors() == {"broken": "verification_failed"}
    assert sidecar.status.ready()


def test_a_refusal_is_retried_after_a_backoff_so_a_repaired_artifact_is_served(
    tmp_path: Path,
) -> None:
    source = write_mlp(tmp_path / "src" / "model.onnx")
    good = source.path.read_bytes()
    registry = FakeRegistry()
    registry.add(MODEL, "1", source.path, production=True)
    source.path.write_bytes(good[:-1] + b"\0")  # the artifact store holds a damaged copy
    sidecar, clock = sidecar_for(tmp_path / "volume", registry, models=[MODEL], refusal_retry=30)
    fetcher = sidecar.fetcher
    assert isinstance(fetcher, FakeFetcher)

    sidecar.sync_all()
    sidecar.sync_all()
    assert fetcher.calls == ["1"]  # refused once, not downloaded again at every poll
    source.path.write_bytes(good)  # repaired in the store
    clock.now += 29
    sidecar.sync_all()
    assert fetcher.calls == ["1"]
    clock.now += 2
    sidecar.sync_all()

    assert fetcher.calls == ["1", "1"]
    published = resolve(tmp_path / "volume", MODEL)
    assert published is not None
    assert published.manifest.sha256 == source.sha256
    assert sidecar.status.errors() == {}


def test_a_file_changed_in_the_volume_is_found_and_published_again(tmp_path: Path) -> None:
    source = logged_model(tmp_path / "src" / "artifacts")
    registry = FakeRegistry()
    registry.add(MODEL, "1", source, sha256=identity(source), production=True)
    sidecar, _ = sidecar_for(tmp_path / "volume", registry, models=[MODEL])
    assert sidecar.sync_all()
    published = resolve(tmp_path / "volume", MODEL)
    assert published is not None
    (published.directory / "model.onnx.data").write_bytes(b"corrupted")

    assert sidecar.sync_all()

    repaired = resolve(tmp_path / "volume", MODEL)
    assert repaired is not None
    assert repaired.directory != published.directory
    assert (repaired.directory / "model.onnx.data").read_bytes() == (
        source / "model.onnx.data"
    ).read_bytes()
    assert not published.directory.exists()  # the corrupted copy is gone
    assert 'sidecar_volume_repairs_total{model="iris"} 1.0' in sidecar.metrics.render().decode()


def test_a_same_size_same_mtime_corruption_is_found_by_the_periodic_full_digest(
    tmp_path: Path,
) -> None:
    source = write_mlp(tmp_path / "src" / "model.onnx")
    registry = FakeRegistry()
    registry.add(MODEL, "1", source.path, production=True)
    sidecar, clock = sidecar_for(tmp_path / "volume", registry, models=[MODEL],
                                 verify_interval=600)  # fmt: skip
    assert sidecar.sync_all()
    published = resolve(tmp_path / "volume", MODEL)
    assert published is not None
    model = published.directory / "model.onnx"
    stat = model.stat()
    with model.open("r+b") as handle:  # flip one byte in place: same size, same inode
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    sidecar.sync_all()
    assert resolve(tmp_path / "volume", MODEL).directory == published.directory  # type: ignore[union-attr]
    clock.now += 601
    sidecar.sync_all()

    repaired = resolve(tmp_path / "volume", MODEL)
    assert repaired is not None
    assert repaired.directory != published.directory
    assert identity(repaired.directory / "model.onnx") == source.sha256


def test_a_server_below_the_minimum_is_refused_by_name(tmp_path: Path) -> None:
    registry = FakeRegistry(mlflow_version="2.6.0")
    sidecar, _ = sidecar_for(tmp_path / "volume", registry)
    with pytest.raises(ServerTooOldError, match=r"2\.6\.0 is older than 2\.7"):
        sidecar.sync_all()


def test_an_unreachable_server_is_asked_its_version_again_next_cycle(tmp_path: Path) -> None:
    registry = FakeRegistry(down=True)
    sidecar, _ = sidecar_for(tmp_path / "volume", registry)
    assert not sidecar.sync_all()
    registry.down = False
    sidecar.sync_all()
    assert sidecar.server_version == "3.17.2"


def test_a_model_deleted_from_the_registry_leaves_the_status(tmp_path: Path) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", write_mlp(tmp_path / "a.onnx").path, production=True)
    registry.add("gone", "1", write_mlp(tmp_path / "b.onnx", seed=2).path, production=True)
    sidecar, _ = sidecar_for(tmp_path / "volume", registry)
    assert sidecar.sync_all()
    assert set(sidecar.status.snapshot()["models"]) == {MODEL, "gone"}
    del registry.versions[("gone", "1")]
    del registry.production["gone"]
    assert sidecar.sync_all()
    assert set(sidecar.status.snapshot()["models"]) == {MODEL}
    assert sidecar.status.ready()
