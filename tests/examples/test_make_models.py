"""The example models are the same bytes on every machine: models.yaml's sha256 holds anywhere.

A fit at build time broke this (a LogisticRegression fit differs between Intel and AMD CPUs);
the weights are now written in examples/make_models.py and this test rebuilds them here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import yaml

REPO = Path(__file__).resolve().parents[2]


def _make_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_models", REPO / "examples/make_models.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declared() -> dict[str, str]:
    spec = yaml.safe_load((REPO / "models.yaml").read_text(encoding="utf-8"))
    return {
        Path(version["source"]).stem: version["sha256"]
        for model in spec["models"]
        for version in model["versions"]
        if version["source"].startswith("examples/models/")
    }


def test_every_example_builds_to_the_sha256_models_yaml_declares() -> None:
    module = _make_models()
    declared = _declared()
    assert set(declared) == set(module.VERSIONS)
    for name, (coefficients, intercepts) in module.VERSIONS.items():
        data = module.build(coefficients, intercepts)
        assert hashlib.sha256(data).hexdigest() == declared[name], name


def test_the_build_does_not_fit_or_import_a_training_library() -> None:
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='not_main'); "
        "print(sorted(m for m in ('sklearn', 'skl2onnx', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "examples/make_models.py")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_the_examples_classify_iris_flowers() -> None:
    module = _make_models()
    flowers = np.array(
        [[5.1, 3.5, 1.4, 0.2], [6.4, 3.2, 4.5, 1.5], [6.3, 3.3, 6.0, 2.5]], np.float32
    )
    for name, weights in module.VERSIONS.items():
        session = ort.InferenceSession(module.build(*weights), providers=["CPUExecutionProvider"])
        label, probabilities = session.run(["label", "probabilities"], {"input": flowers})
        assert label.tolist() == [0, 1, 2], name
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5), name
