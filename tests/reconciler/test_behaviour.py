"""Behaviour on sample inputs: predictions compared (table-driven), limits, probe, apply, render."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from contracts.registry import MANAGED_TAG, SHA256_TAG, STAGE_TAG, Stage
from reconciler import render
from reconciler.apply import apply
from reconciler.behaviour import BehaviourDiff, OutputDiff, compare_predictions
from reconciler.errors import BehaviourLimitError
from reconciler.plan import make_plan
from reconciler.probe import SignatureProbe
from reconciler.serving import Evidence, refusals
from reconciler.spec import Desired, ModelsFile
from reconciler.trial import error_text
from tests.reconciler.fakes import FakeRegistry
from tests.reconciler.test_apply import AUDIT, LOCK, make_desired
from tests.reconciler.test_plan import A, B, actual, desired, managed
from tests.reconciler.test_plan_signatures import S, key, promote_b
from tests.support.onnx_models import BuiltModel, mlp_model, sha256_of, write_mlp

F = np.float32
ZIPMAP_A = [{0: 0.9, 1: 0.1}, {0: 0.2, 1: 0.8}]
ZIPMAP_B = [{0: 0.9, 1: 0.1}, {0: 0.6, 1: 0.4}]

CASES = [
    pytest.param(
        {"y": np.array([[1, 2], [3, 4]], F)},
        {"y": np.array([[1, 2], [3, 4]], F)},
        ["y"],
        BehaviourDiff(2, 0, 0.0, (OutputDiff("y", 0, 0.0),)),
        id="same",
    ),
    pytest.param(
        {"y": np.array([[1.0], [2.0]])},
        {"y": np.array([[1.0 + 1e-9], [2.0]])},
        ["y"],
        BehaviourDiff(2, 0, pytest.approx(1e-9), (OutputDiff("y", 0, pytest.approx(1e-9)),)),
        id="within-tolerance-still-measured",
    ),
    pytest.param(
        {"y": np.array([[1.0, 2.0], [3.0, 4.0]]), "label": np.array([1, 0])},
        {"y": np.array([[1.0, 2.5], [3.0, 4.0]]), "label": np.array([1, 1])},
        ["y", "label"],
        BehaviourDiff(2, 2, 1.0, (OutputDiff("y", 1, 0.5), OutputDiff("label", 1, 1.0))),
        id="rows-differing-in-any-output-count-once-each",
    ),
    pytest.param(
        {"label": np.array(["setosa", "virginica"], dtype=object)},
        {"label": np.array(["setosa", "versicolor"], dtype=object)},
        ["label"],
        BehaviourDiff(2, 1, None, (OutputDiff("label", 1, None),)),
        id="strings-are-equal-or-not",
    ),
    pytest.param(
        {"probabilities": ZIPMAP_A},
        {"probabilities": ZIPMAP_B},
        ["probabilities"],
        BehaviourDiff(
            2, 1, pytest.approx(0.4), (OutputDiff("probabilities", 1, pytest.approx(0.4)),)
        ),
        id="zipmap-rows-are-mappings",
    ),
    pytest.param(
        {"y": np.array([[1.0], [2.0]])},
        {"y": np.array([[1.0], [2.0], [3.0]])},
        ["y"],
        BehaviourDiff(3, 1, 0.0, (OutputDiff("y", 1, 0.0),)),
        id="a-missing-row-differs",
    ),
    pytest.param(
        {"y": np.array([[1.0]]), "old": np.array([1])},
        {"y": np.array([[1.0]]), "new": np.array([1])},
        ["y"],
        BehaviourDiff(1, 0, 0.0, (OutputDiff("y", 0, 0.0),), ("new", "old")),
        id="outputs-in-one-version-only-are-not-compared",
    ),
]


@pytest.mark.parametrize(("served", "becoming", "comparable", "expected"), CASES)
def test_predictions_compared(
    served: dict[str, Any], becoming: dict[str, Any], comparable: list[str], expected: Any
) -> None:
    assert compare_predictions(served, becoming, comparable) == expected


def test_summary() -> None:
    found = BehaviourDiff(3, 1, 0.0123, (OutputDiff("y", 1, 0.0123),), ("new",))
    assert found.summary() == "1 of 3 row(s) differ, largest difference 0.0123 (not compared: new)"
    nothing = compare_predictions({"label": [1]}, {"output_label": [1]}, [])
    assert nothing.summary() == "not compared: no output in common (label, output_label)"


# --- limits in the plan (pure) ------------------------------------------------------------------

SAMPLE = {"sample_input": [[1.0, 2.0, 3.0, 4.0]] * 3}


def limited_plan(found: BehaviourDiff | str, **limits: float) -> Any:
    wanted = desired(promote_b(**SAMPLE), behaviour_limits=limits or None)
    evidence = Evidence({key("A"): S, key("B"): S}, {(key("A"), key("B"), "sample_input"): found})
    return make_plan(wanted, actual(managed("1", A, Stage.PRODUCTION)), evidence)


def test_past_a_limit_is_refused_with_both_figures() -> None:
    plan = limited_plan(
        BehaviourDiff(3, 2, 0.25, (OutputDiff("y", 2, 0.25),)),
        max_differing_rows=1,
        max_abs_difference=0.1,
    )
    (review,) = plan.reviews
    assert review.limit_breaches == (
        "on sample_input 2 of 3 row(s) differ, max_differing_rows is 1",
        "on sample_input the largest difference is 0.25, max_abs_difference is 0.1",
    )
    assert review.refused
    assert not review.refused_breaking
    (refusal,) = refusals(plan.reviews)
    assert isinstance(refusal, BehaviourLimitError)
    assert str(refusal).startswith(
        f"m: refused stage Production: v1 -> new {B[:12]}: it answers past "
        "the limits of models.yaml (on sample_input 2 of 3 row(s) differ, max_differing_rows is "
        "1; on sample_input the largest difference is 0.25, max_abs_difference is 0.1)."
    )


@pytest.mark.parametrize(
    ("limits", "refused"),
    [
        ({}, False),
        ({"max_differing_rows": 2}, False),
        ({"max_abs_difference": 0.25}, False),
        ({"max_differing_rows": 1}, True),
        ({"max_abs_difference": 0.2}, True),
    ],
)
def test_a_limit_holds_up_to_its_value(limits: dict[str, float], refused: bool) -> None:
    plan = limited_plan(BehaviourDiff(3, 2, 0.25, (OutputDiff("y", 2, 0.25),)), **limits)
    assert plan.reviews[0].refused is refused


def test_behaviour_that_could_not_be_compared_is_shown_and_blocks_nothing() -> None:
    plan = limited_plan("the served version cannot run sample_input: x", max_differing_rows=0)
    (review,) = plan.reviews
    assert not review.refused
    assert review.behaviour_lines() == [
        "behaviour on sample_input: not compared (the served version cannot run sample_input: x)"
    ]


def test_every_renderer_shows_the_figures_and_the_refusal() -> None:
    plan = limited_plan(
        BehaviourDiff(3, 2, 0.25, (OutputDiff("y", 2, 0.25),)), max_differing_rows=1
    )
    text = render.text(plan).splitlines()
    assert "    behaviour on sample_input: 2 of 3 row(s) differ, largest difference 0.25" in text
    assert (
        "    PAST A LIMIT: on sample_input 2 of 3 row(s) differ, max_differing_rows is 1 "
        "(apply refuses it)"
    ) in text
    assert text[-1] == "1 version(s) past the behaviour limits of models.yaml: apply refuses them."
    markdown = render.markdown(plan)
    assert (
        "behaviour on sample\\_input\\: 2 of 3 row\\(s\\) differ\\, largest difference 0\\.25"
        in (markdown)
    )
    assert "PAST A LIMIT\\: on sample\\_input 2 of 3 row\\(s\\) differ" in markdown
    (item,) = json.loads(render.json_text(plan))["signatures"]
    assert item["behaviour"] == [{
        "rows_from": "sample_input",
        "problem": None,
        "rows": 3,
        "differing_rows": 2,
        "max_abs_difference": 0.25,
        "outputs": [{"name": "y", "differing_rows": 2, "max_abs_difference": 0.25}],
        "not_compared": [],
    }]  # fmt: skip
    assert item["limit_breaches"] == [
        "on sample_input 2 of 3 row(s) differ, max_differing_rows is 1"
    ]
    assert item["refused"] is True


# --- real models: probe and apply -----------------------------------------------------------------


def retrained(path: Path, *, seed: int, note: str = "") -> BuiltModel:
    """An MLP on 4 inputs; the same seed with another note is new bytes, same predictions."""
    model = mlp_model(n_inputs=4, n_outputs=3, seed=seed, with_label=True)
    model.doc_string = note
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return BuiltModel(path, sha256_of(path), path.stat().st_size, 4, 3, seed)


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


@pytest.fixture
def serving(tmp_path: Path) -> tuple[FakeRegistry, BuiltModel]:
    v1 = retrained(tmp_path / "models" / "v1.onnx", seed=1)
    registry = FakeRegistry({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version(
        "m", "s3://b/1", None, {SHA256_TAG: v1.sha256, STAGE_TAG: "Production"}, None
    )
    registry.set_stage("m", "1", Stage.PRODUCTION)
    registry.calls.clear()
    return registry, v1


def entries(v1: BuiltModel, v2: BuiltModel) -> list[dict[str, Any]]:
    return [
        {"source": "s3://b/1", "sha256": v1.sha256, "stage": "Archived"},
        {
            "source": "models/v2.onnx",
            "sha256": v2.sha256,
            "stage": "Production",
            "sample_input": ROWS,
        },
    ]


def with_limits(base: Path, versions: list[dict[str, Any]], **limits: float) -> Desired:
    model = {"name": "m", "versions": versions, "behaviour_limits": limits}
    return Desired(base / "models.yaml", ModelsFile.model_validate({"models": [model]}))


def test_the_probe_runs_both_versions_on_the_sample(
    tmp_path: Path, serving: tuple[FakeRegistry, BuiltModel]
) -> None:
    registry, v1 = serving
    same = retrained(tmp_path / "models" / "v2.onnx", seed=1, note="re-exported")
    probe = SignatureProbe(registry, make_desired(tmp_path, entries(v1, same)))
    (found,) = probe.evidence(registry.read(["m"])).behaviours.values()
    assert isinstance(found, BehaviourDiff)
    assert (found.rows, found.differing_rows, found.max_abs_difference) == (3, 0, 0.0)

    other = retrained(tmp_path / "models" / "v2.onnx", seed=2)
    probe = SignatureProbe(registry, make_desired(tmp_path, entries(v1, other)))
    (found,) = probe.evidence(registry.read(["m"])).behaviours.values()
    assert isinstance(found, BehaviourDiff)
    assert found.rows == 3
    assert found.differing_rows >= 1
    assert found.max_abs_difference is not None
    assert found.max_abs_difference > 0.01
    assert [o.name for o in found.outputs] == ["output", "label"]


def test_apply_refuses_past_a_limit_then_passes_once_it_is_raised(
    tmp_path: Path, serving: tuple[FakeRegistry, BuiltModel]
) -> None:
    registry, v1 = serving
    v2 = retrained(tmp_path / "models" / "v2.onnx", seed=2)
    strict = with_limits(tmp_path, entries(v1, v2), max_abs_difference=0.001)
    result = apply(registry, strict, AUDIT, LOCK)
    assert not result.ok
    (failure,) = result.failures
    assert failure.startswith("m: refused stage Production: v1 -> v2: it answers past the limits")
    assert "max_abs_difference is 0.001" in failure
    assert registry.models["m"].versions["1"].stage is Stage.PRODUCTION

    relaxed = with_limits(tmp_path, entries(v1, v2), max_abs_difference=1000)
    result = apply(registry, relaxed, AUDIT, LOCK)
    assert result.ok, result.failures
    assert registry.models["m"].versions["2"].stage is Stage.PRODUCTION


def test_without_a_sample_input_behaviour_is_not_compared(
    make_onnx: Callable[..., BuiltModel],
) -> None:
    """The sample is the new version's: a version without one compares signatures only."""
    v1 = make_onnx("a.onnx", seed=1)
    registry = FakeRegistry({"s3://b/1": v1.path})
    registry.create_model("m", None, {MANAGED_TAG: "true"})
    registry.register_version("m", "s3://b/1", None, {SHA256_TAG: v1.sha256}, None)
    registry.set_stage("m", "1", Stage.PRODUCTION)
    v2 = make_onnx("b.onnx", seed=2)
    desired_file = make_desired(
        v1.path.parent.parent,
        [
            {"source": "s3://b/1", "sha256": v1.sha256},
            {"source": "models/b.onnx", "sha256": v2.sha256, "stage": "Production"},
        ],
    )
    evidence = SignatureProbe(registry, desired_file).evidence(registry.read(["m"]))
    assert evidence.behaviours == {}
    assert len(evidence.signatures) == 2


def test_a_sample_that_leaves_an_input_of_either_version_out_compares_nothing(
    tmp_path: Path, serving: tuple[FakeRegistry, BuiltModel]
) -> None:
    registry, v1 = serving
    v2 = retrained(tmp_path / "models" / "v2.onnx", seed=2)
    versions = entries(v1, v2)
    versions[1]["sample_input"] = {"features": ROWS}  # v2's input is named "input"
    probe = SignatureProbe(registry, make_desired(tmp_path, versions))
    assert list(probe.evidence(registry.read(["m"])).behaviours.values()) == [
        "sample_input gives no rows for the new version's input"
    ]


def test_the_evaluation_file_is_compared_too_and_never_read_outside_the_repository(
    tmp_path: Path, serving: tuple[FakeRegistry, BuiltModel]
) -> None:
    registry, v1 = serving
    v2 = retrained(tmp_path / "models" / "v2.onnx", seed=2)
    (tmp_path / "holdout.jsonl").write_text("".join(f"{json.dumps(row)}\n" for row in ROWS * 4))
    model = {"name": "m", "versions": entries(v1, v2), "evaluation_file": "holdout.jsonl"}
    probe = SignatureProbe(
        registry, Desired(tmp_path / "models.yaml", ModelsFile.model_validate({"models": [model]}))
    )
    found = probe.evidence(registry.read(["m"])).behaviours
    assert sorted(rows_from for _, _, rows_from in found) == ["holdout.jsonl", "sample_input"]
    holdout = next(value for k, value in found.items() if k[2] == "holdout.jsonl")
    assert isinstance(holdout, BehaviourDiff)
    assert holdout.rows == 12

    outside = tmp_path.parent / f"{tmp_path.name}-outside.jsonl"
    outside.write_text("[1, 2, 3, 4]\n")
    model = {"name": "m", "versions": entries(v1, v2), "evaluation_file": f"../{outside.name}"}
    probe = SignatureProbe(
        registry, Desired(tmp_path / "models.yaml", ModelsFile.model_validate({"models": [model]}))
    )
    found = probe.evidence(registry.read(["m"])).behaviours
    refused = next(value for k, value in found.items() if k[2] != "sample_input")
    assert isinstance(refused, str)
    assert refused.startswith(f"cannot read ../{outside.name}: ")
    assert "outside" in refused or "repository" in refused


def test_an_onnxruntime_error_is_shown_whole_on_one_line(tmp_path: Path) -> None:
    """onnxruntime says which dimension differs on its second line (a new user's trial saw
    "Got invalid dimensions for input: X for the following indices" and nothing after)."""
    session = ort.InferenceSession(
        str(write_mlp(tmp_path / "m.onnx").path), providers=["CPUExecutionProvider"]
    )
    with pytest.raises(Exception) as caught:  # onnxruntime's errors are untyped
        session.run(None, {"input": np.zeros((1, 10), np.float32)})
    assert "\n" in str(caught.value)
    text = error_text(caught.value)
    assert "\n" not in text
    assert "index: 1 Got: 10 Expected: 16" in text
