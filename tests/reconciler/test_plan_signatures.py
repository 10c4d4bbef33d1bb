"""make_plan with signatures: which versions become served, reviewed against the served ones."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.registry import ROLLOUT_TAG, Stage
from reconciler.errors import BreakingChangeError
from reconciler.plan import make_plan
from reconciler.serving import Evidence, SignatureKey, refusals
from reconciler.signature import Signature, TensorSpec
from reconciler.state import ActualVersion, RegistryState
from tests.reconciler.test_plan import A, B, C, actual, desired, managed

S = Signature(
    (TensorSpec("x", "tensor(float)", ("N", 4)),), (TensorSpec("y", "tensor(float)", ("N", 3)),)
)
WIDER = Signature((TensorSpec("x", "tensor(float)", ("N", 5)),), S.outputs)
MORE = Signature(S.inputs, (*S.outputs, TensorSpec("label", "tensor(int64)", ("N",))))


def key(name: str) -> SignatureKey:
    """``A`` -> sha256 A's key; ``v3`` -> version 3's (unmanaged)."""
    table = {"A": A, "B": B, "C": C}
    return ("m", f"sha256:{table[name]}" if name in table else name)


def sigs(**by_key: Signature | str) -> Evidence:
    """``sigs(A=S, v3=WIDER)``: sha256 A's signature, and version 3's (unmanaged)."""
    return Evidence({key(name): value for name, value in by_key.items()})


def promote_b(**extra: Any) -> list[dict[str, Any]]:
    return [
        {"source": "s3://b/1", "sha256": A, "stage": "Archived"},
        {"source": "s3://b/2", "sha256": B, "stage": "Production", **extra},
    ]


CANARY_VERSIONS = [
    {"source": "s3://b/1", "sha256": A, "stage": "Production"},
    {"source": "s3://b/2", "sha256": B, "stage": "Staging"},
]

ACK = {"breaking_change_acknowledged": "clients send 5 features since app 2.0"}

Row = tuple[str, str, str, bool, bool, bool, str | None]
"""(follows, served, becoming, compared, breaking, refused, problem)"""

CASES = [
    pytest.param(
        desired(promote_b()),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A=S, B=WIDER),
        [("stage Production", "v1", f"new {B[:12]}", True, True, True, None)],
        id="breaking-production-refused",
    ),
    pytest.param(
        desired(promote_b(**ACK)),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A=S, B=WIDER),
        [("stage Production", "v1", f"new {B[:12]}", True, True, False, None)],
        id="breaking-production-acknowledged",
    ),
    pytest.param(
        desired(promote_b()),
        actual(managed("1", A, Stage.PRODUCTION), managed("2", B, Stage.NONE)),
        sigs(A=S, B=MORE),
        [("stage Production", "v1", "v2", True, False, False, None)],
        id="compatible-production-registered",
    ),
    pytest.param(
        desired(promote_b()),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A=S, B=S),
        [("stage Production", "v1", f"new {B[:12]}", True, False, False, None)],
        id="same-signature",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production"}]),
        RegistryState(),
        sigs(A=S),
        [("stage Production", "nothing served", f"new {A[:12]}", False, False, False, None)],
        id="first-production-nothing-to-compare",
    ),
    pytest.param(
        desired(
            [
                {"source": "s3://b/1", "sha256": A, "stage": "Production"},
                {"source": "s3://b/2", "sha256": B, "aliases": ["champion"]},
            ]
        ),
        actual(managed("1", A, Stage.PRODUCTION), aliases={"champion": "1"}),
        sigs(A=S, B=WIDER),
        [("alias champion", "v1", f"new {B[:12]}", True, True, True, None)],
        id="alias-moves-to-a-breaking-version",
    ),
    pytest.param(
        desired(promote_b(aliases=["champion"])),
        actual(managed("1", A, Stage.PRODUCTION), aliases={"champion": "1"}),
        sigs(A=S, B=WIDER),
        [("stage Production, alias champion", "v1", f"new {B[:12]}", True, True, True, None)],
        id="production-and-alias-moving-together-are-one-review",
    ),
    pytest.param(
        desired(promote_b(aliases=["champion"])),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A=S, B=WIDER),
        [
            ("stage Production", "v1", f"new {B[:12]}", True, True, True, None),
            ("alias champion", "nothing served", f"new {B[:12]}", False, False, False, None),
        ],
        id="new-alias-has-nothing-served-before",
    ),
    pytest.param(
        desired(CANARY_VERSIONS, rollout={"stage": "Staging", "mode": "canary", "weight": 10}),
        actual(managed("1", A, Stage.PRODUCTION), managed("2", B, Stage.STAGING)),
        sigs(A=S, B=WIDER),
        [("canary 10%", "v1", "v2", True, True, True, None)],
        id="a-canary-candidate-answers-clients-too",
    ),
    pytest.param(
        desired(CANARY_VERSIONS, rollout={"stage": "Staging", "mode": "canary", "weight": 20}),
        actual(
            managed("1", A, Stage.PRODUCTION),
            managed("2", B, Stage.STAGING),
            tags={ROLLOUT_TAG: '{"candidate_version":"2","mode":"canary","weight":10}'},
        ),
        sigs(A=S, B=WIDER),
        [],
        id="a-running-canary-changing-its-weight-is-not-a-new-move",
    ),
    pytest.param(
        desired(CANARY_VERSIONS, rollout={"stage": "Staging", "mode": "shadow"}),
        actual(managed("1", A, Stage.PRODUCTION), managed("2", B, Stage.STAGING)),
        sigs(A=S, B=WIDER),
        [],
        id="a-shadow-candidate-never-answers",
    ),
    pytest.param(
        desired([{"source": "s3://b/1", "sha256": A, "stage": "Production", "aliases": ["c"]}]),
        actual(managed("1", A, Stage.PRODUCTION), aliases={"c": "1"}),
        sigs(),
        [],
        id="in-sync-nothing-reviewed",
    ),
    pytest.param(
        desired([{"source": "s3://b/2", "sha256": B, "stage": "Production"}]),
        actual(ActualVersion("3", "s3://b/3", Stage.PRODUCTION)),
        sigs(v3=S, B=WIDER),
        [("stage Production", "v3", f"new {B[:12]}", True, True, True, None)],
        id="unmanaged-served-version-is-compared-too",
    ),
    pytest.param(
        desired(promote_b()),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A="SourceError: no model.onnx", B=WIDER),
        [
            (
                "stage Production",
                "v1",
                f"new {B[:12]}",
                False,
                False,
                False,
                "served v1: SourceError: no model.onnx",
            )
        ],
        id="served-unreadable-not-compared",
    ),
    pytest.param(
        desired(promote_b()),
        actual(managed("1", A, Stage.PRODUCTION)),
        sigs(A=S, B="not an ONNX model"),
        [
            (
                "stage Production",
                "v1",
                f"new {B[:12]}",
                False,
                False,
                False,
                f"new {B[:12]}: not an ONNX model",
            )
        ],
        id="candidate-unreadable-left-to-the-gate",
    ),
]


@pytest.mark.parametrize(("wanted", "found", "signatures", "expected"), CASES)
def test_reviews(
    wanted: Any, found: RegistryState, signatures: Evidence, expected: list[Row]
) -> None:
    plan = make_plan(wanted, found, signatures)
    rows = [
        (
            r.move.follows,
            r.move.served.label() if r.move.served else "nothing served",
            r.move.becoming.label(),
            r.compared,
            bool(r.breaking),
            r.refused,
            r.problem,
        )
        for r in plan.reviews
    ]
    assert rows == expected
    assert len(refusals(plan.reviews)) == sum(1 for row in expected if row[5])


def test_signatures_do_not_change_the_changes() -> None:
    wanted, found = desired(promote_b()), actual(managed("1", A, Stage.PRODUCTION))
    without = make_plan(wanted, found)
    with_signatures = make_plan(wanted, found, sigs(A=S, B=WIDER))
    assert without.reviews == ()
    assert without.changes == with_signatures.changes


def test_a_refusal_names_the_breaking_tensors_and_the_field_to_set() -> None:
    plan = make_plan(
        desired(promote_b()), actual(managed("1", A, Stage.PRODUCTION)), sigs(A=S, B=WIDER)
    )
    (refusal,) = refusals(plan.reviews)
    assert isinstance(refusal, BreakingChangeError)
    assert refusal.model == "m"
    assert refusal.changes == ("input x: dim 1: 4 -> 5 (fixed size changed)",)
    assert f"stage Production: v1 -> new {B[:12]}" in str(refusal)
    assert "breaking_change_acknowledged: <reason>" in str(refusal)


def test_the_acknowledgement_is_shown() -> None:
    plan = make_plan(
        desired(promote_b(**ACK)), actual(managed("1", A, Stage.PRODUCTION)), sigs(A=S, B=WIDER)
    )
    (review,) = plan.reviews
    assert review.verdict_line() == (
        "BREAKING, acknowledged in models.yaml: clients send 5 features since app 2.0"
    )
