"""Build the example ONNX models that models.yaml points at (scikit-learn iris -> skl2onnx).

Deterministic: the same pinned versions give the same bytes, so the sha256 in models.yaml holds.
Coefficients are rounded before conversion so that BLAS differences between CPUs cannot change
a bit of the output.

    python examples/make_models.py [--out examples/models]
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent

# version -> regularisation strength: two genuinely different models of the same task.
VERSIONS = {"iris-v1": 0.05, "iris-v2": 1.0}


def build(c: float) -> bytes:
    iris = load_iris()
    features = iris.data.astype(np.float32)
    model = LogisticRegression(C=c, max_iter=1000).fit(features, iris.target)
    model.coef_ = np.round(model.coef_, 3)
    model.intercept_ = np.round(model.intercept_, 3)
    onx = to_onnx(
        model,
        features[:1],
        target_opset=17,
        options={id(model): {"zipmap": False}},
    )
    onx.producer_version = "mlgitops"
    onx.graph.input[0].name = "input"
    for node in onx.graph.node:
        node.input[:] = ["input" if name == "X" else name for name in node.input]
    return onx.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, c in VERSIONS.items():
        data = build(c)
        path = args.out / f"{name}.onnx"
        path.write_bytes(data)
        print(f"{path}  sha256={hashlib.sha256(data).hexdigest()}  bytes={len(data)}")


if __name__ == "__main__":
    main()
