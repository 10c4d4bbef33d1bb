"""apply refuses a breaking signature change unless models.yaml acknowledges it (fake registry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG, Stage
from reconciler.apply import apply
from reconciler.signature import Verdict
from tests.reconciler.fakes import FakeRegistry
from tests.reconciler.test_apply import AUDIT, LOCK, make_desired
from tests.support.onnx_models import BuiltModel


@pytest.fixture
def served(make_onnx: Callable[..., BuiltModel]) -> tuple[FakeRegistry, BuiltModel]:
    """MLflow serves v1 (16 inputs) in Production, with an alias ``live``."""
    v1 = make_onnx("v1.onnx", seed=1, n_inputs=16)
    registry = FakeRegistry({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version(
        "m", "s3://b/1", None, {SHA256_TAG: v1.sha256, STAGE_TAG: "Production"}, None
    )
    registry.set_stage("m", "1", Stage.PRODUCTION)
    registry.set_alias("m", "live", "1")
    registry.calls.clear()
    return registry, v1


def versions(v1: BuiltModel, v2: BuiltModel, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
        {
            "source": "models/v2.onnx",
            "sha256": v2.sha256,
            "stage": "Production",
            "aliases": ["live"],
            **extra,
        },
    ]


def moves(registry: FakeRegistry) -> list[tuple[str, ...]]:
    return [call for call in registry.calls if call[0] in ("set_stage", "set_alias")]


def test_a_breaking_version_is_registered_but_not_served_until_acknowledged(
    tmp_path: Path,
    served: tuple[FakeRegistry, BuiltModel],
    make_onnx: Callable[..., BuiltModel],
) -> None:
    registry, v1 = served
    v2 = make_onnx("v2.onnx", seed=2, n_inputs=8)
    result = apply(registry, make_desired(tmp_path, versions(v1, v2)), AUDIT, LOCK)
    assert not result.ok
    (failure,) = result.failures  # one refusal for Production and the alias
    assert failure.startswith("m: refused stage Production, alias live: v1 -> v2: ")
    assert "input input: dim 1: 16 -> 8 (fixed size changed)" in failure
    (review,) = result.first_plan.reviews
    assert review.refused
    assert [d.verdict for d in review.diffs] == [Verdict.BREAKING, Verdict.UNCHANGED]
    assert "2" in registry.models["m"].versions  # registered: nothing is lost
    assert moves(registry) == []
    assert registry.models["m"].versions["1"].stage is Stage.PRODUCTION
    assert registry.models["m"].aliases == {"live": "1"}

    registry.calls.clear()
    acknowledged = versions(v1, v2, breaking_change_acknowledged="clients send 8 features")
    result = apply(registry, make_desired(tmp_path, acknowledged), AUDIT, LOCK)
    assert result.ok, result.failures
    assert not result.final_plan.has_changes
    assert ("set_stage", "m", "2", "Production") in moves(registry)
    assert registry.models["m"].aliases == {"live": "2"}
    assert all(r.breaking and not r.refused for r in result.first_plan.reviews)


def test_a_compatible_version_needs_no_acknowledgement(
    tmp_path: Path,
    served: tuple[FakeRegistry, BuiltModel],
    make_onnx: Callable[..., BuiltModel],
) -> None:
    registry, v1 = served
    v2 = make_onnx("v2.onnx", seed=2, n_inputs=16, with_label=True)  # one more output
    result = apply(registry, make_desired(tmp_path, versions(v1, v2)), AUDIT, LOCK)
    assert result.ok, result.failures
    assert registry.models["m"].versions["2"].stage is Stage.PRODUCTION
    review = result.first_plan.reviews[0]
    assert review.compared
    assert not review.breaking
    assert [(d.name, d.verdict) for d in review.diffs] == [
        ("input", Verdict.UNCHANGED),
        ("output", Verdict.UNCHANGED),
        ("label", Verdict.COMPATIBLE),
    ]


def test_a_served_version_that_cannot_be_read_does_not_block_its_replacement(
    tmp_path: Path,
    served: tuple[FakeRegistry, BuiltModel],
    make_onnx: Callable[..., BuiltModel],
) -> None:
    registry, v1 = served
    del registry.files["s3://b/1"]  # the served version's artifact is gone
    v2 = make_onnx("v2.onnx", seed=2, n_inputs=8)
    result = apply(registry, make_desired(tmp_path, versions(v1, v2)), AUDIT, LOCK)
    assert result.ok, result.failures
    review = result.first_plan.reviews[0]
    assert review.problem is not None
    assert review.problem.startswith("served v1: ")
    assert registry.models["m"].versions["2"].stage is Stage.PRODUCTION
