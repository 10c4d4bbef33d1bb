"""apply against an in-memory registry: order, gate, lock, retries, staleness."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG, Stage
from reconciler.apply import Audit, LockNameTakenError, LockOptions, apply, apply_lock
from reconciler.errors import (
    ApplyError,
    LockedError,
    RegistryRequestError,
    RegistryUnavailableError,
    StalePlanError,
)
from reconciler.plan import Plan
from reconciler.registry import RetryPolicy, call_with_retries
from reconciler.spec import Desired, ModelsFile
from reconciler.state import LOCK_TAG
from tests.reconciler.fakes import FakeModel, FakeRegistry
from tests.support.onnx_models import BuiltModel, external_data_model

AUDIT = Audit(applied_by="tester", git_commit="abc")
LOCK = LockOptions(name="lock", wait_seconds=0)


def make_desired(tmp_path: Path, versions: list[dict[str, Any]]) -> Desired:
    file = ModelsFile.model_validate({"models": [{"name": "m", "versions": versions}]})
    return Desired(tmp_path / "models.yaml", file)


@pytest.fixture
def promoted(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> tuple[FakeRegistry, BuiltModel, BuiltModel]:
    """MLflow holds v1 in Production (managed); v2 is a new file in the repository."""
    v1, v2 = make_onnx("v1.onnx", seed=1), make_onnx("v2.onnx", seed=2)
    registry = FakeRegistry({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version(
        "m", "s3://b/1", None, {SHA256_TAG: v1.sha256, STAGE_TAG: "Production"}, None
    )
    registry.set_stage("m", "1", Stage.PRODUCTION)
    registry.calls.clear()
    return registry, v1, v2


def test_new_production_is_in_place_before_the_old_one_leaves(
    tmp_path: Path, promoted: tuple[FakeRegistry, BuiltModel, BuiltModel]
) -> None:
    registry, v1, v2 = promoted
    desired = make_desired(
        tmp_path,
        [
            {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
            {"source": "models/v2.onnx", "sha256": v2.sha256, "stage": "Production",
             "aliases": ["live"]},
        ],
    )  # fmt: skip
    result = apply(registry, desired, AUDIT, LOCK)
    assert result.ok, result.failures
    assert not result.final_plan.has_changes
    calls = registry.calls
    assert calls[0] == ("lock", "lock")
    assert calls[-1] == ("unlock", "lock")
    promote = calls.index(("set_stage", "m", "2", "Production"))
    archive = calls.index(("set_stage", "m", "1", "Archived"))
    assert promote < archive
    # Every transition is followed by the stage tag the sidecar listens for.
    assert calls[promote + 1] == ("set_version_tag", "m", "2", STAGE_TAG, "Production")
    assert calls[archive + 1] == ("set_version_tag", "m", "1", STAGE_TAG, "Archived")
    assert calls.index(("set_alias", "m", "live", "2")) > promote
    tags = registry.models["m"].versions["2"].tags
    assert tags["mlgitops.git-commit"] == "abc"
    assert tags["mlgitops.applied-by"] == "tester"
    assert tags["mlgitops.size"] == str(v2.size)
    # Applying again writes nothing at all, not even the lock.
    registry.calls.clear()
    assert apply(registry, desired, AUDIT, LOCK).done == []
    assert registry.calls == []


def test_a_version_failing_the_gate_is_not_promoted_and_production_stays(
    tmp_path: Path,
    promoted: tuple[FakeRegistry, BuiltModel, BuiltModel],
    make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:
    registry, v1, _ = promoted
    broken = make_corrupt_onnx("broken.onnx")
    desired = make_desired(
        tmp_path,
        [
            {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
            {"source": "models/broken.onnx", "sha256": broken.sha256, "stage": "Production"},
        ],
    )
    result = apply(registry, desired, AUDIT, LOCK)
    assert not result.ok
    assert any("promotion gate (onnxruntime)" in failure for failure in result.failures)
    assert not [call for call in registry.calls if call[0] == "set_stage"]
    assert registry.models["m"].versions["1"].stage is Stage.PRODUCTION


def test_a_checksum_mismatch_is_not_registered(
    tmp_path: Path, promoted: tuple[FakeRegistry, BuiltModel, BuiltModel]
) -> None:
    registry, v1, _ = promoted
    desired = make_desired(
        tmp_path,
        [
            {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
            {"source": "models/v2.onnx", "sha256": "f" * 64, "stage": "Production"},
        ],
    )
    result = apply(registry, desired, AUDIT, LOCK)
    assert any("sha256 mismatch" in failure for failure in result.failures)
    assert "2" not in registry.models["m"].versions
    assert registry.models["m"].versions["1"].stage is Stage.PRODUCTION


def test_a_stale_saved_plan_is_refused(
    tmp_path: Path, promoted: tuple[FakeRegistry, BuiltModel, BuiltModel]
) -> None:
    registry, v1, _ = promoted
    desired = make_desired(tmp_path, [{"source": "s3://b/1", "sha256": v1.sha256,
                                       "stage": "Archived"}])  # fmt: skip
    with pytest.raises(StalePlanError):
        apply(registry, desired, AUDIT, LOCK, expected=Plan())
    assert registry.models["m"].versions["1"].stage is Stage.PRODUCTION
    assert registry.locks == {}


def test_mlflow_going_away_reports_what_was_done(
    tmp_path: Path, promoted: tuple[FakeRegistry, BuiltModel, BuiltModel]
) -> None:
    registry, v1, v2 = promoted

    def unavailable(*_: object) -> None:
        raise RegistryUnavailableError("setting a stage", 3, ConnectionError("refused"))

    registry.set_stage = unavailable  # type: ignore[method-assign,assignment]
    desired = make_desired(
        tmp_path,
        [
            {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
            {"source": "models/v2.onnx", "sha256": v2.sha256, "stage": "Production"},
        ],
    )
    with pytest.raises(ApplyError) as caught:
        apply(registry, desired, AUDIT, LOCK)
    assert any("create version" in item for item in caught.value.done)
    assert "failed setting a stage 3 time(s)" in str(caught.value)
    assert registry.locks == {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_lock_refuses_after_waiting_for_a_live_holder() -> None:
    registry, clock = FakeRegistry(), Clock()
    registry.locks["lock"] = {LOCK_TAG: "true", "holder": "ci job 7", "expires_at": "5000"}
    options = LockOptions(name="lock", wait_seconds=30, poll_seconds=1)
    with (
        pytest.raises(LockedError, match=r"another apply is running \(ci job 7\); waited 30s"),
        apply_lock(registry, options, holder="me", clock=clock, sleep=clock.sleep),
    ):
        pass
    assert registry.locks["lock"]["holder"] == "ci job 7"


def test_a_signal_while_mlflow_creates_the_lock_releases_it() -> None:
    """SIGTERM (SystemExit) arriving after MLflow created the lock but before the answer was
    read: the lock this run created is deleted, not left for its lease to expire."""

    class Interrupted(FakeRegistry):
        def try_lock(self, name: str, tags: Mapping[str, str]) -> bool:
            super().try_lock(name, tags)
            raise SystemExit(143)

    registry, clock = Interrupted(), Clock()
    with (
        pytest.raises(SystemExit),
        apply_lock(registry, LOCK, holder="me", clock=clock, sleep=clock.sleep),
    ):
        pass
    assert registry.locks == {}


def test_lock_waits_for_the_holder_to_finish() -> None:
    registry, clock = FakeRegistry(), Clock()
    registry.locks["lock"] = {LOCK_TAG: "true", "holder": "other", "expires_at": "5000"}

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now > 1005:
            registry.locks.pop("lock", None)  # the other apply finishes

    options = LockOptions(name="lock", wait_seconds=60, poll_seconds=1)
    with apply_lock(registry, options, holder="me", clock=clock, sleep=sleep):
        assert registry.locks["lock"]["holder"] == "me"
    assert registry.locks == {}


def test_an_expired_lock_is_taken_over() -> None:
    registry, clock = FakeRegistry(), Clock()
    registry.locks["lock"] = {LOCK_TAG: "true", "holder": "dead", "token": "t", "expires_at": "999"}
    with apply_lock(registry, LOCK, holder="me", clock=clock, sleep=clock.sleep):
        assert registry.locks["lock"]["holder"] == "me"


def test_a_model_named_like_the_lock_is_never_deleted() -> None:
    """Registered by hand under the lock's name (no lock tag, expired or not): left alone."""
    registry, clock = FakeRegistry(), Clock()
    registry.create_model("lock", None, {"team": "fraud"})
    registry.add_version("lock")
    registry.calls.clear()
    with (
        pytest.raises(LockNameTakenError, match="'lock' exists and is not an apply lock"),
        apply_lock(registry, LOCK, holder="me", clock=clock, sleep=clock.sleep),
    ):
        pass
    assert "lock" in registry.models
    assert [call for call in registry.calls if call[0] == "unlock"] == []


def test_a_lock_taken_over_by_another_run_is_not_released_by_this_one() -> None:
    registry, clock = FakeRegistry(), Clock()
    with apply_lock(registry, LOCK, holder="me", clock=clock, sleep=clock.sleep):
        registry.locks["lock"] = {LOCK_TAG: "true", "holder": "next", "token": "theirs"}
    assert registry.locks["lock"]["holder"] == "next"


def test_mlflow_failing_mid_apply_reports_its_own_error_and_releases_the_lock(
    tmp_path: Path, promoted: tuple[FakeRegistry, BuiltModel, BuiltModel]
) -> None:
    """The failure is reported as it was (not as a failure to read the lock), and the lock
    goes even when MLflow refused the call outright."""
    registry, v1, v2 = promoted

    def refused(*_: object, **__: object) -> None:
        raise RegistryRequestError(
            "registering a version of m", MlflowException("INTERNAL_ERROR: disk I/O error")
        )

    registry.register_version = refused  # type: ignore[method-assign,assignment]
    original_unlock = registry.unlock
    desired = make_desired(
        tmp_path,
        [{"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
         {"source": "models/v2.onnx", "sha256": v2.sha256, "stage": "Production"}],
    )  # fmt: skip
    result = apply(registry, desired, AUDIT, LOCK)
    assert any("disk I/O error" in failure for failure in result.failures)
    assert registry.locks == {}

    def down(*_: object) -> None:
        raise RegistryUnavailableError("setting a stage", 3, ConnectionError("refused"))

    def unlock_while_down(name: str, token: str) -> None:
        raise RegistryUnavailableError("releasing the apply lock", 3, ConnectionError("refused"))

    registry.set_stage = down  # type: ignore[method-assign,assignment]
    registry.unlock = unlock_while_down  # type: ignore[method-assign]
    del registry.register_version
    with pytest.raises(ApplyError) as caught:
        apply(registry, desired, AUDIT, LOCK)
    assert "failed setting a stage 3 time(s)" in str(caught.value)
    assert "apply lock" not in str(caught.value)
    registry.unlock = original_unlock  # type: ignore[method-assign]


def test_temporary_failures_are_retried_with_backoff() -> None:
    attempts: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise requests.ConnectionError("refused")
        if len(attempts) == 2:
            raise MlflowException("bad gateway", error_code=TEMPORARILY_UNAVAILABLE)
        return "ok"

    policy = RetryPolicy(retries=3, backoff_seconds=1)
    assert call_with_retries("reading", flaky, policy, sleeps.append) == "ok"
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1
    assert 1 <= sleeps[1] <= 2


def test_retries_give_up_and_permanent_errors_are_not_retried() -> None:
    sleeps: list[float] = []

    def down() -> None:
        raise MlflowException("API request failed with exception Connection refused")

    with pytest.raises(RegistryUnavailableError, match="failed reading 3 time"):
        call_with_retries("reading", down, RetryPolicy(retries=2), sleeps.append)
    assert len(sleeps) == 2

    def missing() -> None:
        raise MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(RegistryRequestError):
        call_with_retries("reading", missing, RetryPolicy(retries=2), sleeps.append)
    assert len(sleeps) == 2


def test_an_unmanaged_version_named_in_the_file_is_adopted_after_its_bytes_are_checked(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    built = make_onnx("theirs.onnx", seed=5)
    registry = FakeRegistry({"s3://x/1": built.path})
    registry.add_version("m", stage=Stage.PRODUCTION)  # registered by hand: no sha256 tag
    registry.models["m"].tags[MANAGED_TAG] = "true"
    entry = {"source": "s3://x/1", "sha256": built.sha256, "stage": "Production", "version": "1"}
    result = apply(registry, make_desired(tmp_path, [entry]), AUDIT, LOCK)
    assert result.ok, result.failures
    tags = registry.models["m"].versions["1"].tags
    assert tags[SHA256_TAG] == built.sha256
    assert tags[STAGE_TAG] == "Production"
    assert len(registry.models["m"].versions) == 1  # adopted, not registered again

    wrong = {**entry, "sha256": "e" * 64, "version": "2"}
    registry.add_version("m")
    registry.files["s3://x/2"] = built.path
    result = apply(registry, make_desired(tmp_path, [entry, wrong]), AUDIT, LOCK)
    assert any("not adopted: sha256 mismatch" in failure for failure in result.failures)
    assert SHA256_TAG not in registry.models["m"].versions["2"].tags


def test_a_long_apply_extends_its_lease() -> None:
    registry, clock = FakeRegistry(), Clock()
    options = LockOptions(name="lock", lease_seconds=100)
    with apply_lock(registry, options, holder="me", clock=clock, sleep=clock.sleep) as keep_alive:
        clock.now += 10
        keep_alive()
        assert registry.locks["lock"]["expires_at"] == "1100.000"  # under half the lease
        clock.now += 50
        keep_alive()
        assert registry.locks["lock"]["expires_at"] == "1160.000"


def test_a_repository_file_failing_the_gate_is_never_uploaded(
    tmp_path: Path, make_corrupt_onnx: Callable[[str], BuiltModel]
) -> None:
    """Checked on disk before anything moves: no upload, no version, for any stage."""
    broken = make_corrupt_onnx("broken.onnx")
    registry = FakeRegistry()
    entry = {"source": "models/broken.onnx", "sha256": broken.sha256}
    result = apply(registry, make_desired(tmp_path, [entry]), AUDIT, LOCK)
    assert any("refused at the promotion gate (onnxruntime)" in item for item in result.failures)
    assert [call for call in registry.calls if call[0] in ("upload", "register_version")] == []
    assert registry.locks == {}


def test_a_repository_directory_is_uploaded_whole_under_one_identity(tmp_path: Path) -> None:
    """ONNX + external data: identity over every file; upload keeps the relative names."""
    from contracts.digest import identity

    directory = external_data_model(tmp_path / "models" / "torch-export")
    registry = FakeRegistry()
    entry = {"source": "models/torch-export", "sha256": identity(directory),
             "stage": "Production", "sample_input": [[1.0, 2.0, 3.0, 4.0]]}  # fmt: skip
    result = apply(registry, make_desired(tmp_path, [entry]), AUDIT, LOCK)
    assert result.ok, result.failures
    assert ("upload", "m", "torch-export") in registry.calls
    version = registry.models["m"].versions["1"]
    assert version.stage is Stage.PRODUCTION
    assert version.tags["mlgitops.size"] == str(sum(p.stat().st_size for p in directory.iterdir()))


@pytest.mark.parametrize(
    ("source", "registered", "run_id", "model_id"),
    [
        ("models:/m-0123abcd", "models:/m-0123abcd", None, "m-0123abcd"),
        ("mlflow-artifacts:/1/models/m-0123abcd/artifacts", None, None, "m-0123abcd"),
        ("runs:/4f5e6d/model", None, "4f5e6d", None),
        ("mlflow-artifacts:/1/4f5e6d/artifacts/model", None, "4f5e6d", None),
        ("models:/team-model/3", None, None, None),
        ("models:/team-model@champion", "models:/team-model/3", None, None),
        ("s3://bucket/model.onnx", None, None, None),
    ],
)
def test_every_source_kind_is_registered_with_what_mlflow_requires(
    tmp_path: Path,
    make_onnx: Callable[..., BuiltModel],
    source: str,
    registered: str | None,
    run_id: str | None,
    model_id: str | None,
) -> None:
    """A logged model needs its model_id, a run's artifact its run_id; an alias is pinned to
    the version it names now (the bytes must not follow a later move of the alias)."""
    built = make_onnx("x.onnx", seed=3)
    registry = FakeRegistry({source: built.path, "models:/team-model/3": built.path})
    registry.models["team-model"] = FakeModel(aliases={"champion": "3"})
    entry = {"source": source, "sha256": built.sha256, "stage": "Staging"}
    result = apply(registry, make_desired(tmp_path, [entry]), AUDIT, LOCK)
    assert result.ok, result.failures
    assert registry.registered_with[("m", "1")] == (registered or source, run_id, model_id)
    assert registry.models["m"].versions["1"].tags["mlgitops.source"] == source


def test_an_alias_move_is_gated_first(
    tmp_path: Path,
    promoted: tuple[FakeRegistry, BuiltModel, BuiltModel],
    make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:
    """A sidecar may follow any alias: an alias never points at a version the gate refused."""
    registry, v1, _ = promoted
    broken = make_corrupt_onnx("stored.onnx")
    registry.files["s3://b/1"] = broken.path  # the stored bytes changed after registration
    entry = {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Production",
             "aliases": ["champion"]}  # fmt: skip
    result = apply(registry, make_desired(tmp_path, [entry]), AUDIT, LOCK)
    assert any("refused at the promotion gate (sha256)" in item for item in result.failures)
    assert registry.models["m"].aliases == {}
