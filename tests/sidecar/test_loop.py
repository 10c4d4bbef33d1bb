"""The loop against a fake registry and real files: publish, promote, refuse, fail, roll out."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.volume import (
    CANDIDATE_LINK,
    TMP_PREFIX,
    link_path,
    resolve,
    versions_dir,
)
from sidecar.loop import Sidecar, delay_after, equal_jitter
from sidecar.resolve import parse_rollout
from sidecar.settings import SidecarSettings
from tests.sidecar.fakes import FakeFetcher, FakeRegistry
from tests.support.onnx_models import BuiltModel, sha256_of, write_mlp

MODEL = "iris"
Build = Callable[[int], BuiltModel]


@pytest.fixture
def build(tmp_path: Path) -> Build:
    return lambda seed: write_mlp(tmp_path / "src" / f"seed{seed}" / "model.onnx", seed=seed)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return tmp_path / "volume"


def make_sidecar(
    volume: Path, registry: FakeRegistry, fetcher: FakeFetcher, **kw: object
) -> Sidecar:
    settings = SidecarSettings(volume=volume, models=[MODEL], http_port=0, **kw)  # type: ignore[arg-type]
    return Sidecar(settings, registry, fetcher)


def current_sha(volume: Path, role: str = "current") -> str | None:
    published = resolve(volume, MODEL, role)
    if published is None:
        return None
    assert sha256_of(published.model_file) == published.manifest.sha256
    return published.manifest.sha256


def test_first_fetch_publishes_a_verified_version_with_its_manifest(
    volume: Path, build: Build
) -> None:
    model = build(1)
    registry = FakeRegistry()
    registry.add(MODEL, "1", model.path, production=True)
    sidecar = make_sidecar(volume, registry, FakeFetcher())

    assert sidecar.run_once()

    published = resolve(volume, MODEL)
    assert published is not None
    assert os.readlink(link_path(volume, MODEL)) == "versions/1"
    manifest = published.manifest
    assert (manifest.name, manifest.version, manifest.sha256, manifest.size) == (
        MODEL, "1", model.sha256, model.size,
    )  # fmt: skip
    assert manifest.stage == "Production"
    assert manifest.role == "current"
    assert manifest.files == {"model.onnx": model.sha256}
    assert manifest.fetched_at
    assert sidecar.status.ready()


def test_an_unchanged_registry_downloads_nothing(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path, production=True)
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    assert sidecar.sync_all()
    assert sidecar.sync_all()
    assert fetcher.calls == ["1"]


def test_promotion_flips_current_and_a_rollback_reuses_the_kept_directory(
    volume: Path, build: Build
) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path, production=True)
    v2 = registry.add(MODEL, "2", build(2).path)
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    sidecar.sync_all()

    registry.production[MODEL] = "2"
    assert sidecar.sync_all()
    assert current_sha(volume) == v2.sha256

    registry.production[MODEL] = "1"
    assert sidecar.sync_all()
    assert os.readlink(link_path(volume, MODEL)) == "versions/1"
    assert fetcher.calls == ["1", "2"]  # the rollback needed no download


def test_an_acknowledgement_set_later_republishes_the_manifest_without_a_download(
    volume: Path, build: Build
) -> None:
    """The server reads breaking_change_acknowledged from the manifest: a tag set after the
    version was published reaches it as a new directory (the old one is never modified)."""
    registry = FakeRegistry()
    ref = registry.add(MODEL, "1", build(1).path, production=True)
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    assert sidecar.sync_all()
    first = os.readlink(link_path(volume, MODEL))
    registry.versions[(MODEL, "1")] = dataclasses.replace(
        ref, breaking_change_acknowledged="clients are ready"
    )

    assert sidecar.sync_all()

    published = resolve(volume, MODEL)
    assert published is not None
    assert published.manifest.breaking_change_acknowledged == "clients are ready"
    assert os.readlink(link_path(volume, MODEL)) != first
    assert fetcher.calls == ["1"]  # hard links from the intact copy, no second download
    assert sidecar.sync_all()
    assert fetcher.calls == ["1"]


def test_sha256_mismatch_is_refused_and_current_stays(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    v1 = registry.add(MODEL, "1", build(1).path, production=True)
    registry.add(MODEL, "2", build(2).path, sha256="0" * 64)
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    sidecar.sync_all()

    registry.production[MODEL] = "2"
    sidecar.sync_all()
    sidecar.sync_all()

    assert current_sha(volume) == v1.sha256
    assert not versions_dir(volume, MODEL).joinpath("2").exists()
    assert fetcher.calls == ["1", "2"]  # refused once, not downloaded again every poll
    assert sidecar.status.model(MODEL).last_error == "verification_failed"  # no raw text
    assert not [p for p in (volume / MODEL).iterdir() if p.name.startswith(TMP_PREFIX)]
    metrics = sidecar.metrics.render().decode()
    assert 'sidecar_fetches_total{model="iris",result="refused",role="current"} 1.0' in metrics


def test_size_mismatch_is_refused(volume: Path, build: Build) -> None:
    model = build(1)
    registry = FakeRegistry()
    ref = registry.add(MODEL, "1", model.path, production=True)
    registry.versions[(MODEL, "1")] = dataclasses.replace(ref, size=model.size + 1)
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    sidecar.sync_all()
    assert resolve(volume, MODEL) is None
    assert sidecar.status.model(MODEL).last_error == "verification_failed"


def test_a_version_without_checksum_tag_is_never_served(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    ref = registry.add(MODEL, "1", build(1).path, production=True)
    registry.versions[(MODEL, "1")] = dataclasses.replace(ref, sha256=None)
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    sidecar.sync_all()
    assert resolve(volume, MODEL) is None
    assert sidecar.status.model(MODEL).last_error == "not_verifiable"


@pytest.mark.parametrize(
    "failure", [ConnectionError("S3 said 503"), OSError(28, "No space left on device")]
)
def test_a_failed_download_leaves_current_and_no_scratch(
    volume: Path, build: Build, failure: Exception
) -> None:
    registry = FakeRegistry()
    v1 = registry.add(MODEL, "1", build(1).path, production=True)
    registry.add(MODEL, "2", build(2).path)
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    sidecar.sync_all()

    registry.production[MODEL] = "2"
    fetcher.fail = failure
    assert not sidecar.sync_all()  # a temporary failure: the loop backs off
    assert current_sha(volume) == v1.sha256
    assert not [p for p in (volume / MODEL).iterdir() if p.name.startswith(TMP_PREFIX)]

    fetcher.fail = None  # recovers by itself at the next check
    assert sidecar.sync_all()
    assert os.readlink(link_path(volume, MODEL)) == "versions/2"


def test_registry_down_is_a_failed_cycle_and_current_stays(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    v1 = registry.add(MODEL, "1", build(1).path, production=True)
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    sidecar.sync_all()
    registry.down = True
    assert not sidecar.sync_all()
    assert current_sha(volume) == v1.sha256
    assert sidecar.status.ready()  # still serving the last good version


def test_leftovers_of_a_killed_run_are_cleaned_at_start(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path, production=True)
    leftover = volume / MODEL / f"{TMP_PREFIX}abc" / "download"
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_bytes(b"half")
    (volume / MODEL / f"{TMP_PREFIX}link-x").symlink_to("versions/9")
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    assert sidecar.run_once()
    assert sorted(p.name for p in (volume / MODEL).iterdir()) == ["current", "versions"]


def test_old_versions_are_pruned_after_the_flip(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    for seed in range(1, 6):
        registry.add(MODEL, str(seed), build(seed).path)
    sidecar = make_sidecar(volume, registry, FakeFetcher(), keep_versions=2)
    for version in ("1", "2", "3", "4", "5"):
        registry.production[MODEL] = version
        assert sidecar.sync_all()
    assert sorted(p.name for p in versions_dir(volume, MODEL).iterdir()) == ["4", "5"]
    registry.production[MODEL] = "1"  # a rollback beyond what is kept downloads again
    assert sidecar.sync_all()
    assert sorted(p.name for p in versions_dir(volume, MODEL).iterdir()) == ["1", "5"]


def test_rollout_publishes_the_candidate_and_removes_it_when_the_tag_goes(
    volume: Path, build: Build
) -> None:
    registry = FakeRegistry()
    v1 = registry.add(MODEL, "1", build(1).path, production=True)
    v2 = registry.add(MODEL, "2", build(2).path)
    raw = {"candidate_version": "2", "mode": "canary", "weight": 10}
    registry.rollouts[MODEL] = parse_rollout(MODEL, json.dumps(raw))
    fetcher = FakeFetcher()
    sidecar = make_sidecar(volume, registry, fetcher)
    assert sidecar.sync_all()

    candidate = resolve(volume, MODEL, CANDIDATE_LINK)
    assert candidate is not None
    assert candidate.manifest.role == "candidate"
    assert candidate.manifest.rollout.to_dict() == raw
    assert candidate.manifest.sha256 == v2.sha256
    assert current_sha(volume) == v1.sha256

    raw = {**raw, "weight": 50}  # a new weight: a new candidate manifest, no new download
    registry.rollouts[MODEL] = parse_rollout(MODEL, json.dumps(raw))
    assert sidecar.sync_all()
    candidate = resolve(volume, MODEL, CANDIDATE_LINK)
    assert candidate is not None
    assert candidate.manifest.rollout.to_dict() == raw
    assert fetcher.calls == ["1", "2"]

    del registry.rollouts[MODEL]
    assert sidecar.sync_all()
    assert not link_path(volume, MODEL, CANDIDATE_LINK).is_symlink()
    assert current_sha(volume) == v1.sha256
    assert [p.name for p in versions_dir(volume, MODEL).iterdir() if "candidate" in p.name] == []


def test_candidate_equal_to_current_gets_its_own_manifest(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path, production=True)
    registry.rollouts[MODEL] = parse_rollout(
        MODEL, '{"candidate_version": "1", "mode": "shadow", "weight": 0}'
    )
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    assert sidecar.sync_all()
    current, candidate = resolve(volume, MODEL), resolve(volume, MODEL, CANDIDATE_LINK)
    assert current is not None
    assert candidate is not None
    assert current.manifest.role == "current"
    assert current.manifest.rollout is None
    assert candidate.manifest.role == "candidate"
    assert candidate.manifest.rollout is not None


@pytest.mark.parametrize(
    "value",
    ["not json", "[]", '{"mode": "canary"}', '{"candidate_version": "2", "mode": "blue"}',
     '{"candidate_version": "2", "weight": 101}'],
)  # fmt: skip
def test_invalid_rollout_tags_are_refused_with_the_expected_shape(value: str) -> None:
    with pytest.raises(Exception, match="candidate_version"):
        parse_rollout(MODEL, value)


def test_backoff_grows_exponentially_half_fixed_half_random_and_is_capped() -> None:
    wait = equal_jitter(1, 30)
    ceilings = [1, 2, 4, 8, 16, 30, 30]
    for failures, ceiling in enumerate(ceilings, start=1):
        delays = [delay_after(wait, failures) for _ in range(200)]
        assert ceiling / 2 <= min(delays) <= max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # random, not fixed
    assert delay_after(wait, 0) == 0
    assert delay_after(wait, 10_000) <= 30  # no overflow


def test_following_every_model_skips_those_without_a_version_to_serve(
    volume: Path, build: Build
) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path, production=True)
    registry.add("staging-only", "1", build(2).path)
    settings = SidecarSettings(volume=volume, http_port=0)
    sidecar = Sidecar(settings, registry, FakeFetcher())
    assert sidecar.run_once()
    assert sidecar.status.ready()
    assert sidecar.status.errors() == {}
    assert resolve(volume, "staging-only") is None


@pytest.mark.parametrize("registered", [False, True], ids=["empty-registry", "staging-only"])
def test_following_every_model_with_nothing_to_serve_is_ready(
    volume: Path, build: Build, registered: bool
) -> None:
    """A new cluster: the init container's ``--once`` must not fail before any model exists."""
    registry = FakeRegistry()
    if registered:
        registry.add("staging-only", "1", build(1).path)
    sidecar = Sidecar(SidecarSettings(volume=volume, http_port=0), registry, FakeFetcher())
    assert not sidecar.status.ready()  # before the first cycle
    assert sidecar.run_once()
    assert sidecar.status.ready()
    assert sidecar.status.errors() == {}


def test_following_every_model_is_not_ready_while_the_registry_cannot_be_listed(
    volume: Path,
) -> None:
    registry = FakeRegistry(down=True)
    sidecar = Sidecar(SidecarSettings(volume=volume, http_port=0), registry, FakeFetcher())
    assert not sidecar.run_once()
    assert not sidecar.status.ready()


def test_a_named_model_without_a_version_to_serve_is_an_error(volume: Path, build: Build) -> None:
    registry = FakeRegistry()
    registry.add(MODEL, "1", build(1).path)
    sidecar = make_sidecar(volume, registry, FakeFetcher())
    sidecar.run_once()
    assert not sidecar.status.ready()
    assert sidecar.status.errors()[MODEL] == "nothing_to_serve"
