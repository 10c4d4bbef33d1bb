"""Publishing is atomic: a reader in a tight loop never sees half a model (and would notice)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contracts.volume import MANIFEST_FILE, MODEL_FILE, Manifest
from sidecar.errors import CorruptedVolumeError
from sidecar.loop import Sidecar
from sidecar.publish import Publisher
from sidecar.settings import SidecarSettings
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.sidecar.reader import ReaderReport, check_once, reading
from tests.support.onnx_models import write_mlp
from tests.support.waiting import wait_until

MODEL = "big"


def test_seal_refuses_a_mismatch_and_install_never_sees_it(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path / "volume")
    with publisher.scratch(MODEL) as scratch:
        staged = scratch / "v"
        staged.mkdir()
        (staged / MODEL_FILE).write_bytes(b"tampered")
        manifest = Manifest(name=MODEL, version="1", sha256="0" * 64, files={MODEL_FILE: "0" * 64})
        with pytest.raises(CorruptedVolumeError, match=r"model\.onnx has sha256"):
            publisher.seal(staged, manifest, check=True)
        assert not (staged / MANIFEST_FILE).exists()
    assert sorted(p.name for p in (tmp_path / "volume" / MODEL).iterdir()) == []


def test_flip_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    (tmp_path / MODEL / "versions" / "1").mkdir(parents=True)
    with pytest.raises(Exception, match=r"no manifest\.json"):
        publisher.flip(MODEL, "current", "1")


def test_a_reader_never_sees_a_partial_or_mismatched_model_across_many_flips(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "volume"
    registry = FakeRegistry()
    builds = [
        write_mlp(tmp_path / "src" / f"v{seed}.onnx", seed=seed, n_inputs=64, hidden=2048)
        for seed in (1, 2, 3)
    ]
    for index, build in enumerate(builds, start=1):
        registry.add(MODEL, str(index), build.path, production=index == 1)
    settings = SidecarSettings(volume=volume, models=[MODEL], http_port=0, keep_versions=2)
    sidecar = Sidecar(settings, registry, FakeFetcher())
    assert sidecar.sync_all()

    with reading(volume, MODEL, {b.sha256 for b in builds}) as report:
        flips = 0
        for flips in range(1, 151):  # keep_versions=2 of 3: some flips download, some reuse
            registry.production[MODEL] = str(flips % 3 + 1)
            assert sidecar.sync_all()
        wait_until(lambda: report.reads > 50, timeout=30, what="the reader to read")
    assert report.errors == []
    assert len(report.seen) == 3, "the reader never saw some versions: the test proves nothing"
    assert flips == 150


def test_the_reader_catches_a_writer_that_rewrites_in_place(tmp_path: Path) -> None:
    """The negative control: the same reader against a non-atomic writer must fail."""
    volume = tmp_path / "volume"
    builds = [
        write_mlp(tmp_path / "src" / f"v{seed}.onnx", seed=seed, n_inputs=64, hidden=2048)
        for seed in (1, 2)
    ]
    directory = volume / MODEL / "versions" / "1"
    directory.mkdir(parents=True)
    (volume / MODEL / "current").symlink_to("versions/1")

    def naive_publish(index: int) -> None:
        build = builds[index % 2]
        data = build.path.read_bytes()
        manifest = Manifest(name=MODEL, version="1", sha256=build.sha256, size=build.size)
        (directory / MANIFEST_FILE).write_text(manifest.to_json())
        with (directory / MODEL_FILE).open("wb") as handle:  # truncate, then write in pieces
            for start in range(0, len(data), 1 << 16):
                handle.write(data[start : start + (1 << 16)])
                handle.flush()
                time.sleep(0)  # let the reader run (releases the GIL)

    naive_publish(0)
    with reading(volume, MODEL, {b.sha256 for b in builds}) as report:
        index = 0

        def caught() -> bool:
            nonlocal index
            index += 1
            naive_publish(index)
            return bool(report.errors)

        wait_until(caught, timeout=60, interval=0, what="the reader to catch a torn read")
    assert report.errors


def test_check_once_reports_a_model_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    directory = tmp_path / MODEL / "versions" / "1"
    directory.mkdir(parents=True)
    (tmp_path / MODEL / "current").symlink_to("versions/1")
    (directory / MODEL_FILE).write_bytes(b"abc")
    (directory / MANIFEST_FILE).write_text(
        Manifest(name=MODEL, version="1", sha256="0" * 64, size=3).to_json()
    )
    report = ReaderReport()
    check_once(tmp_path, MODEL, {"0" * 64}, report)
    assert len(report.errors) == 2
