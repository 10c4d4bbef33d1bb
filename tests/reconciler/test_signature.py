"""Signatures: read from real ONNX files; compared tensor by tensor (table-driven)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from reconciler.signature import (
    Dim,
    Signature,
    TensorSpec,
    Verdict,
    compare,
    listing,
    read_signature,
)
from tests.support.onnx_models import IR_VERSION, OPSET, write_mlp


def tensor(
    name: str, type_: str = "tensor(float)", *shape: Dim, optional: bool = False
) -> TensorSpec:
    return TensorSpec(name, type_, tuple(shape), optional)


X = tensor("x", "tensor(float)", "N", 4)
Y = tensor("y", "tensor(float)", "N", 3)
SERVED = Signature((X,), (Y,))


def verdicts(served: Signature, becoming: Signature) -> set[tuple[str, str, Verdict, str]]:
    return {
        (diff.side, diff.name, diff.verdict, "; ".join(diff.reasons))
        for diff in compare(served, becoming)
        if diff.verdict is not Verdict.UNCHANGED
    }


CASES = [
    pytest.param(SERVED, set(), id="same"),
    pytest.param(
        Signature((tensor("x", "tensor(float)", "batch", 4),), (Y,)), set(), id="symbolic-renamed"
    ),
    pytest.param(
        Signature((tensor("features", "tensor(float)", "N", 4),), (Y,)),
        {
            ("input", "x", Verdict.BREAKING, "input removed (or renamed)"),
            ("input", "features", Verdict.BREAKING, "new required input"),
        },
        id="input-renamed",
    ),
    pytest.param(
        Signature((X,), (tensor("scores", "tensor(float)", "N", 3),)),
        {
            ("output", "y", Verdict.BREAKING, "output removed (or renamed)"),
            ("output", "scores", Verdict.COMPATIBLE, "new output"),
        },
        id="output-renamed",
    ),
    pytest.param(
        Signature((X,), ()),
        {("output", "y", Verdict.BREAKING, "output removed (or renamed)")},
        id="output-removed",
    ),
    pytest.param(
        Signature((X, tensor("mask", "tensor(bool)", "N")), (Y,)),
        {("input", "mask", Verdict.BREAKING, "new required input")},
        id="new-required-input",
    ),
    pytest.param(
        Signature((X, tensor("temperature", "tensor(float)", 1, optional=True)), (Y,)),
        {("input", "temperature", Verdict.COMPATIBLE, "new optional input")},
        id="new-optional-input",
    ),
    pytest.param(
        Signature((X,), (Y, tensor("label", "tensor(int64)", "N"))),
        {("output", "label", Verdict.COMPATIBLE, "new output")},
        id="new-output",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(double)", "N", 4),), (Y,)),
        {("input", "x", Verdict.BREAKING, "element type tensor(float) -> tensor(double)")},
        id="input-type-changed",
    ),
    pytest.param(
        Signature((X,), (TensorSpec("y", "seq(map(int64,tensor(float)))", None),)),
        {
            (
                "output",
                "y",
                Verdict.BREAKING,
                "element type tensor(float) -> seq(map(int64,tensor(float)))",
            )
        },
        id="output-type-changed",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(float)", "N", 2, 2),), (Y,)),
        {("input", "x", Verdict.BREAKING, "rank 2 -> 3")},
        id="rank-changed",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(float)", "N", 5),), (Y,)),
        {("input", "x", Verdict.BREAKING, "dim 1: 4 -> 5 (fixed size changed)")},
        id="fixed-dim-changed",
    ),
    pytest.param(
        Signature((X,), (tensor("y", "tensor(float)", "N", 2),)),
        {("output", "y", Verdict.BREAKING, "dim 1: 3 -> 2 (fixed size changed)")},
        id="output-fixed-dim-changed",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(float)", "N", "F"),), (Y,)),
        {("input", "x", Verdict.COMPATIBLE, "dim 1: 4 -> F (fixed size now symbolic)")},
        id="fixed-dim-becomes-symbolic",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(float)", 1, 4),), (Y,)),
        {("input", "x", Verdict.BREAKING, "dim 0: N -> 1 (now fixed)")},
        id="input-symbolic-dim-becomes-fixed",
    ),
    pytest.param(
        Signature((X,), (tensor("y", "tensor(float)", 1, 3),)),
        {("output", "y", Verdict.COMPATIBLE, "dim 0: N -> 1 (now fixed)")},
        id="output-symbolic-dim-becomes-fixed",
    ),
    pytest.param(
        Signature((TensorSpec("x", "tensor(float)", None),), (Y,)),
        {("input", "x", Verdict.COMPATIBLE, "rank now unknown")},
        id="input-rank-now-unknown",
    ),
    pytest.param(
        Signature((tensor("x", "tensor(float)", "N", 4, optional=True),), (Y,)),
        {("input", "x", Verdict.COMPATIBLE, "required input now optional")},
        id="input-now-optional",
    ),
]


@pytest.mark.parametrize(("becoming", "expected"), CASES)
def test_each_kind_of_signature_change(
    becoming: Signature, expected: set[tuple[str, str, Verdict, str]]
) -> None:
    assert verdicts(SERVED, becoming) == expected


def test_an_optional_input_made_required_breaks() -> None:
    served = Signature((X, tensor("t", "tensor(float)", 1, optional=True)), (Y,))
    becoming = Signature((X, tensor("t", "tensor(float)", 1)), (Y,))
    assert verdicts(served, becoming) == {
        ("input", "t", Verdict.BREAKING, "optional input now required")
    }


def test_a_served_input_of_unknown_rank_constrained_breaks() -> None:
    served = Signature((TensorSpec("x", "tensor(float)", None),), (Y,))
    assert verdicts(served, SERVED) == {
        ("input", "x", Verdict.BREAKING, "shape now constrained (the rank was unknown)")
    }


def test_one_breaking_reason_makes_the_tensor_breaking() -> None:
    becoming = Signature((tensor("x", "tensor(double)", "N", "F"),), (Y,))
    (diff,) = [d for d in compare(SERVED, becoming) if d.name == "x"]
    assert diff.verdict is Verdict.BREAKING
    assert diff.reasons == (
        "element type tensor(float) -> tensor(double)",
        "dim 1: 4 -> F (fixed size now symbolic)",
    )


def test_every_tensor_is_listed_in_order() -> None:
    becoming = Signature((X,), (Y, tensor("label", "tensor(int64)", "N")))
    assert [(d.side, d.name) for d in compare(SERVED, becoming)] == [
        ("input", "x"),
        ("output", "y"),
        ("output", "label"),
    ]
    assert [(d.side, d.name, d.verdict) for d in listing(SERVED)] == [
        ("input", "x", Verdict.UNCHANGED),
        ("output", "y", Verdict.UNCHANGED),
    ]


def test_describe() -> None:
    assert X.describe() == "tensor(float)[N,4]"
    assert TensorSpec("x", "tensor(float)", None).describe() == "tensor(float)[?]"
    assert tensor("t", "tensor(int64)", None, 1, optional=True).describe() == (
        "tensor(int64)[?,1] optional"
    )


# --- reading real files ------------------------------------------------------------------------


def test_reads_an_mlp(tmp_path: Path) -> None:
    built = write_mlp(tmp_path / "m.onnx", n_inputs=4, n_outputs=3, with_label=True)
    assert read_signature(built.path) == Signature(
        (tensor("input", "tensor(float)", "N", 4),),
        (tensor("output", "tensor(float)", "N", 3), tensor("label", "tensor(int64)", "N")),
    )


def test_an_input_with_a_default_is_optional_and_unknown_dims_stay_unknown(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        "with_default",
        [
            helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 2]),
            helper.make_tensor_value_info("bias", TensorProto.DOUBLE, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 2])],
        initializer=[numpy_helper.from_array(np.zeros(2), "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert read_signature(path) == Signature(
        (
            tensor("x", "tensor(double)", None, 2),
            tensor("bias", "tensor(double)", 2, optional=True),
        ),
        (tensor("y", "tensor(double)", None, 2),),
    )


def test_a_scikit_learn_classifier_retrained_on_more_features_breaks(tmp_path: Path) -> None:
    """skl2onnx at its default options (a ZipMap output), as users convert."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    paths = []
    for features in (4, 5):
        x = rng.standard_normal((30, features)).astype(np.float32)
        fitted = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
        path = tmp_path / f"clf{features}.onnx"
        path.write_bytes(to_onnx(fitted, x[:1]).SerializeToString())
        paths.append(path)
    served, becoming = (read_signature(path) for path in paths)
    assert [t.describe() for t in served.outputs] == [
        "tensor(int64)[?]",
        "seq(map(int64,tensor(float)))",  # a sequence has no shape (onnxruntime says [])
    ]
    changed = {(d.name, d.verdict, d.reasons) for d in compare(served, becoming) if d.reasons}
    assert changed == {("X", Verdict.BREAKING, ("dim 1: 4 -> 5 (fixed size changed)",))}


def test_not_an_onnx_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(Exception, match=r"(?i)protobuf|invalid|load"):
        read_signature(path)


def test_to_dict_and_back() -> None:
    signature = Signature(
        (X, tensor("t", "tensor(int64)", None, 1, optional=True)),
        (TensorSpec("p", "seq(map(int64,tensor(float)))", None),),
    )
    assert Signature.from_dict(signature.to_dict()) == signature
