"""Every renderer shows the signatures of the versions that become served, and marks a break."""

from __future__ import annotations

import json

from markdown_it import MarkdownIt

from contracts.registry import Stage
from reconciler import render
from reconciler.plan import Plan, make_plan
from reconciler.signature import Signature, TensorSpec
from tests.reconciler.test_plan import A, B, actual, desired, managed
from tests.reconciler.test_plan_signatures import ACK, MORE, WIDER, S, promote_b, sigs

BOTH = Signature(WIDER.inputs, MORE.outputs)
"""A wider input (breaking) and a new output (compatible)."""


def breaking_plan(**extra: str) -> Plan:
    return make_plan(
        desired(promote_b(**extra)), actual(managed("1", A, Stage.PRODUCTION)), sigs(A=S, B=BOTH)
    )


NEW_B = f"new {B[:12]}"


def test_text_marks_each_tensor_and_says_apply_refuses() -> None:
    lines = render.text(breaking_plan()).splitlines()
    start = lines.index("Signatures of the versions that become served:")
    assert lines[start + 1 : start + 6] == [
        f"  m stage Production: v1 -> {NEW_B}: 1 breaking, 1 compatible change(s)",
        "    ! input x: tensor(float)[N,4] -> tensor(float)[N,5]    "
        "# breaking: dim 1: 4 -> 5 (fixed size changed)",
        "    = output y: tensor(float)[N,3]",
        "    ~ output label: (none) -> tensor(int64)[N]    # compatible: new output",
        "    BREAKING: apply refuses it; if clients are ready, set "
        "`breaking_change_acknowledged: <reason>` on this version in models.yaml",
    ]
    assert lines[-1] == (
        "1 breaking signature change(s) not acknowledged in models.yaml: apply refuses them."
    )


def test_text_shows_the_acknowledgement_and_no_refusal() -> None:
    text = render.text(breaking_plan(**ACK))
    assert "BREAKING, acknowledged in models.yaml: clients send 5 features since app 2.0" in text
    assert "apply refuses" not in text


def test_text_lists_a_first_signature_without_verdicts() -> None:
    plan = make_plan(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]), actual(), sigs(A=S)
    )
    lines = render.text(plan).splitlines()
    start = lines.index("Signatures of the versions that become served:")
    assert lines[start + 1 : start + 4] == [
        f"  m stage Production: nothing served -> new {A[:12]}: first version served",
        "    = input x: tensor(float)[N,4]",
        "    = output y: tensor(float)[N,3]",
    ]


def test_markdown_lists_a_first_signature_without_verdicts() -> None:
    plan = make_plan(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]), actual(), sigs(A=S)
    )
    lines = render.markdown(plan).splitlines()
    assert "| | input ` x ` | (none) | ` tensor(float)[N,4] ` |  |" in lines  # not "= unchanged"


def test_markdown_has_a_signature_table_with_the_breaking_row() -> None:
    lines = render.markdown(breaking_plan()).splitlines()
    assert (
        "**1 breaking signature change(s) not acknowledged in models.yaml: apply refuses them.**"
        in lines
    )
    assert "#### Signatures of the versions that become served" in lines
    assert (
        f"**m stage Production\\: v1 \\-\\> {NEW_B}\\: 1 breaking\\, 1 compatible change\\(s\\)** "
        "BREAKING\\: apply refuses it\\; if clients are ready\\, set "
        "` breaking_change_acknowledged: <reason> ` on this version in models\\.yaml"
    ) in lines
    rendered = MarkdownIt("commonmark").enable("table").render("\n".join(lines))
    assert "set <code>breaking_change_acknowledged: &lt;reason&gt;</code> on this" in rendered
    assert (
        "| ! breaking | input ` x ` | ` tensor(float)[N,4] ` | ` tensor(float)[N,5] ` | "
        "dim 1\\: 4 \\-\\> 5 \\(fixed size changed\\) |"
    ) in lines
    assert (
        "| ~ compatible | output ` label ` | (none) | ` tensor(int64)[N] ` | new output |" in lines
    )


def test_markdown_reads_no_tensor_name_from_a_model_file_as_markup() -> None:
    hostile = Signature((TensorSpec("<img src=x>|@team", "tensor(float)", ("`N`", 4)),), S.outputs)
    plan = make_plan(
        desired(promote_b()), actual(managed("1", A, Stage.PRODUCTION)), sigs(A=S, B=hostile)
    )
    row = next(line for line in render.markdown(plan).splitlines() if "img" in line)
    assert row == (
        "| ! breaking | input ` <img src=x>\\|@team ` | (none) | "
        "`` tensor(float)[`N`,4] `` | new required input |"
    )


def test_json_carries_the_review_and_still_reads_back() -> None:
    text = render.json_text(breaking_plan())
    (review,) = json.loads(text)["signatures"]
    assert review["follows"] == "stage Production"
    assert review["served_version"] == "1"
    assert review["sha256"] == B
    assert (review["breaking"], review["refused"], review["acknowledged"]) == (True, True, None)
    assert review["tensors"][0] == {
        "side": "input",
        "name": "x",
        "served": {"name": "x", "type": "tensor(float)", "shape": ["N", 4], "optional": False},
        "becoming": {"name": "x", "type": "tensor(float)", "shape": ["N", 5], "optional": False},
        "verdict": "breaking",
        "reasons": ["dim 1: 4 -> 5 (fixed size changed)"],
    }
    assert render.from_json(text).changes == breaking_plan().changes


def test_a_plan_without_signatures_renders_as_before() -> None:
    plan = make_plan(desired(promote_b()), actual(managed("1", A, Stage.PRODUCTION)))
    assert "Signatures" not in render.text(plan)
    assert "Signatures" not in render.markdown(plan)
    assert json.loads(render.json_text(plan))["signatures"] == []
