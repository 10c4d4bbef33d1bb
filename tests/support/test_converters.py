"""The converter models are what the converters emit at their defaults, and they run."""

from __future__ import annotations

from collections.abc import Callable

import onnx
import pytest

from contracts.digest import sha256_file
from tests.support.converters import (
    BUILDERS,
    VARIANTS,
    ZIPMAP_KINDS,
    ConvertedModel,
    assert_same,
    flatten,
    jsonable,
)


def _signature(model: ConvertedModel) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    session = model.session()
    return (
        [(arg.name, arg.type) for arg in session.get_inputs()],
        [(arg.name, arg.type) for arg in session.get_outputs()],
    )


FLOATS = [("input", "tensor(float)")]
# skl2onnx's classifier outputs for int and for string classes: the label and a ZipMap.
INT_LABELS = [
    ("output_label", "tensor(int64)"), ("output_probability", "seq(map(int64,tensor(float)))"),
]  # fmt: skip
STRING_LABELS = [
    ("output_label", "tensor(string)"), ("output_probability", "seq(map(string,tensor(float)))"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "inputs", "outputs"),
    [
        ("sklearn-logistic-regression", FLOATS, INT_LABELS),
        ("sklearn-random-forest", FLOATS, INT_LABELS),
        ("sklearn-logistic-regression-int64", [("input", "tensor(int64)")], INT_LABELS),
        ("sklearn-random-forest-string-labels", FLOATS, STRING_LABELS),
        ("sklearn-text-pipeline", [("text", "tensor(string)")], STRING_LABELS),
        (
            "sklearn-column-transformer",
            [("size", "tensor(float)"), ("color", "tensor(string)")],
            INT_LABELS,
        ),
        (
            "lightgbm-classifier",
            FLOATS,
            [("label", "tensor(int64)"), ("probabilities", "seq(map(int64,tensor(float)))")],
        ),
        ("torch-export", [("x", "tensor(float)")], [("softmax", "tensor(float)")]),
    ],
)
def test_each_builder_has_its_converters_default_signature(
    converted: Callable[[str], ConvertedModel],
    kind: str,
    inputs: list[tuple[str, str]],
    outputs: list[tuple[str, str]],
) -> None:
    model = converted(kind)
    assert _signature(model) == (inputs, outputs)
    assert model.input_names == [name for name, _ in inputs]


@pytest.mark.parametrize("kind", [*ZIPMAP_KINDS, *VARIANTS])
def test_zipmap_classifiers_answer_one_probability_map_per_row_that_agrees_with_the_label(
    converted: Callable[[str], ConvertedModel], kind: str
) -> None:
    model = converted(kind)
    answer = model.expected()
    label_name, probability_name = answer
    rows = len(next(iter(model.rows.values())))
    assert len(answer[label_name]) == rows
    assert len(answer[probability_name]) == rows
    for label, probabilities in zip(answer[label_name], answer[probability_name], strict=True):
        assert all(isinstance(key, str) for key in probabilities)  # JSON object keys
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert max(probabilities, key=probabilities.__getitem__) == str(label)


def test_the_models_are_not_trivial(converted: Callable[[str], ConvertedModel]) -> None:
    """Different rows get different classes: a builder that lost its fit would fail here."""
    for kind in (
        "sklearn-logistic-regression",
        "sklearn-random-forest",
        "sklearn-text-pipeline",
        *VARIANTS,
    ):
        labels = next(iter(converted(kind).expected().values()))
        assert len(set(labels)) > 1, f"{kind} answers {labels} for every row"


def test_single_file_models_are_one_file_whose_identity_is_its_sha256(
    converted: Callable[[str], ConvertedModel],
) -> None:
    for kind in BUILDERS:
        if kind == "torch-export":
            continue
        model = converted(kind)
        assert model.files == ["model.onnx"]
        assert model.source_path == model.path
        assert model.sha256 == sha256_file(model.path)


def test_torch_export_writes_external_data_and_is_declared_as_a_directory(
    converted: Callable[[str], ConvertedModel],
) -> None:
    model = converted("torch-export")
    assert model.files == ["model.onnx", "model.onnx.data"]
    graph = onnx.load(str(model.path), load_external_data=False).graph
    external = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external, "no initializer is stored as external data"
    assert model.source_path == model.directory
    assert model.sha256 != sha256_file(model.path)  # the weights count
    (probabilities,) = model.expected().values()
    assert sum(probabilities[0]) == pytest.approx(1.0, abs=1e-5)


def test_requests_carry_every_input_typed_as_the_model_declares(
    converted: Callable[[str], ConvertedModel],
) -> None:
    model = converted("sklearn-column-transformer")
    assert model.predict_body() == {"data": {"size": [[1.5], [5.5]], "color": [["red"], ["green"]]}}
    assert model.v2_body() == {
        "inputs": [
            {"name": "size", "shape": [2, 1], "datatype": "FP32", "data": [1.5, 5.5]},
            {"name": "color", "shape": [2, 1], "datatype": "BYTES", "data": ["red", "green"]},
        ]
    }
    single = converted("sklearn-logistic-regression")
    assert single.predict_body() == {"data": single.rows["input"]}


def test_assert_same_tolerates_float32_rounding_and_nothing_else() -> None:
    expected = jsonable([{0: 0.25, 1: 0.75}])
    assert_same([{"0": 0.2500001, "1": 0.75}], expected)
    for wrong in ([{"0": 0.26, "1": 0.75}], [{"0": 0.25}], [{"0": 0.25, "2": 0.75}], [], {"0": 1}):
        with pytest.raises(AssertionError):
            assert_same(wrong, expected)
    with pytest.raises(AssertionError):
        assert_same(["1"], [1])  # a label keeps its type
    assert flatten([[1, 2], [3, 4]]) == [1, 2, 3, 4]
