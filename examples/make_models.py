"""Build the example ONNX models that models.yaml points at: two iris classifiers.

The weights are written here, not fitted at build time: a fit is not bit-identical across CPUs
(Intel and AMD give different coefficients), and the sha256 in models.yaml must hold on every
machine. They are the rounded coefficients of scikit-learn's LogisticRegression on the iris data
(C=0.05 and C=1.0, 94 % and 97 % training accuracy); the graph is what skl2onnx emits for it with
ZipMap off, in standard ONNX operators: scores = X @ W.T + b, probabilities = softmax(scores),
label = argmax(scores). Only the onnx package serialises it, so the bytes depend on nothing else.

    python examples/make_models.py [--out examples/models]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8

# version -> (coefficients: one row per class (setosa, versicolor, virginica), intercepts)
VERSIONS: dict[str, tuple[list[list[float]], list[float]]] = {
    "iris-v1": (
        [
            [-0.246, 0.242, -0.893, -0.362],
            [0.014, -0.267, 0.106, -0.115],
            [0.232, 0.025, 0.787, 0.478],
        ],
        [4.138, 1.152, -5.291],
    ),
    "iris-v2": (
        [
            [-0.424, 0.971, -2.515, -1.077],
            [0.538, -0.319, -0.206, -0.943],
            [-0.114, -0.652, 2.721, 2.020],
        ],
        [9.827, 2.205, -12.032],
    ),
}


def build(coefficients: list[list[float]], intercepts: list[float]) -> bytes:
    """The serialised ONNX model of a multinomial logistic regression with these weights."""
    weights = numpy_helper.from_array(np.array(coefficients, dtype=np.float32), name="coef")
    bias = numpy_helper.from_array(np.array(intercepts, dtype=np.float32), name="intercept")
    classes = len(intercepts)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Gemm", ["input", "coef", "intercept"], ["scores"], transB=1),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        name="iris_logistic_regression",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        outputs=[
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]),
        ],
        initializer=[weights, bias],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="mlgitops-examples",
        producer_version="1",
        ir_version=IR_VERSION,
    )
    return bytes(model.SerializeToString(deterministic=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (coefficients, intercepts) in VERSIONS.items():
        data = build(coefficients, intercepts)
        path = args.out / f"{name}.onnx"
        path.write_bytes(data)
        print(f"{path}  sha256={hashlib.sha256(data).hexdigest()}  bytes={len(data)}")


if __name__ == "__main__":
    main()
