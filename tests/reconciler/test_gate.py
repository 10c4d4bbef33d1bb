"""The promotion gate on real ONNX files: identity, onnxruntime load, one inference, time limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.digest import identity
from reconciler.errors import GateError
from reconciler.gate import ProbeError, check_onnx, gate, inspect, onnx_file_in
from tests.reconciler.fakes import FakeRegistry
from tests.support.onnx_models import (
    BuiltModel,
    every_type,
    external_data_model,
    never_ending,
    two_input_model,
)


def test_a_good_model_passes_with_zeros_or_its_sample(
    make_onnx: Callable[..., BuiltModel],
) -> None:
    built = make_onnx("m.onnx", n_inputs=4)
    registry = FakeRegistry({"s3://b/m": built.path})
    for sample in (None, [[1.0, 2.0, 3.0, 4.0]], {"input": [[0.0, 0.0, 0.0, 0.0]]}):
        fetched = gate(registry, model="m", version="1", uri="s3://b/m", sha256=built.sha256,
                       sample=sample)  # fmt: skip
        assert fetched.sha256 == built.sha256


@pytest.mark.parametrize(
    ("case", "step"),
    [("corrupt", "onnxruntime"), ("wrong-sha", "sha256"), ("wrong-shape", "onnxruntime"),
     ("missing", "download"), ("unknown-input", "onnxruntime")],
)  # fmt: skip
def test_a_bad_version_is_refused_with_the_step_that_failed(
    case: str,
    step: str,
    make_onnx: Callable[..., BuiltModel],
    make_corrupt_onnx: Callable[[str], BuiltModel],
) -> None:
    built = make_corrupt_onnx("bad.onnx") if case == "corrupt" else make_onnx("m.onnx")
    registry = FakeRegistry({} if case == "missing" else {"s3://b/m": built.path})
    sha = "0" * 64 if case == "wrong-sha" else built.sha256
    sample = {"wrong-shape": [[1.0, 2.0]], "unknown-input": {"inputs": [[1.0]]}}.get(case)
    with pytest.raises(GateError, match=rf"refused at the promotion gate \({step}\)"):
        gate(registry, model="m", version="1", uri="s3://b/m", sha256=sha, sample=sample)


def test_every_tensor_type_gets_an_input_strings_and_bools_included(tmp_path: Path) -> None:
    """zeros, "" or False of every width, as the server builds them (contracts.tensors)."""
    check_onnx(every_type(tmp_path / "every.onnx"), None, time_limit=60)


def test_a_mapping_sample_feeds_several_inputs_of_mixed_types(tmp_path: Path) -> None:
    model = two_input_model(tmp_path / "two.onnx")
    check_onnx(model, {"amount": [[3.5], [1.0]], "city": [["paris"], ["lyon"]]}, time_limit=60)
    check_onnx(model, None, time_limit=60)  # "" for the string column, 0 for the amount
    with pytest.raises(ProbeError, match="sample_input names \\['town'\\]"):
        check_onnx(model, {"town": [["paris"]]}, time_limit=60)


def test_an_inference_that_never_ends_is_stopped_at_the_limit(tmp_path: Path) -> None:
    model = never_ending(tmp_path / "endless.onnx")
    registry = FakeRegistry({"s3://b/e": model})
    started = time.monotonic()
    with pytest.raises(GateError) as caught:
        gate(registry, model="m", version="3", uri="s3://b/e", sha256=identity(model),
             sample=None, time_limit=3)  # fmt: skip
    assert "did not finish within 3s (RECONCILER_GATE_TIMEOUT_SECONDS)" in str(caught.value)
    assert "(onnxruntime)" in str(caught.value)
    assert time.monotonic() - started < 60  # killed, not waited for


def test_a_directory_is_one_identity_over_every_file(tmp_path: Path) -> None:
    """ONNX + external data: the gate loads it whole; any changed or extra file is refused."""
    directory = external_data_model(tmp_path / "ext")
    registry = FakeRegistry({"s3://b/dir": directory})
    declared = identity(directory)
    fetched = gate(registry, model="m", version="1", uri="s3://b/dir", sha256=declared,
                   sample=[[1.0, 2.0, 3.0, 4.0]])  # fmt: skip
    assert fetched.onnx_file.name == "model.onnx"
    assert fetched.size == sum(p.stat().st_size for p in directory.iterdir())
    (directory / "notes.txt").write_text("an extra file")
    with pytest.raises(GateError, match=r"\(sha256\): the artifact's identity is"):
        gate(registry, model="m", version="1", uri="s3://b/dir", sha256=declared, sample=None)
    (directory / "notes.txt").unlink()
    data = directory / "model.onnx.data"
    data.write_bytes(bytes(reversed(data.read_bytes())))
    with pytest.raises(GateError, match=r"\(sha256\)"):
        gate(registry, model="m", version="1", uri="s3://b/dir", sha256=declared, sample=None)


def test_a_directory_of_one_file_also_carries_that_files_sha256(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    """How a repository file is uploaded (``model/model.onnx``): the sidecar accepts both."""
    built = make_onnx("model.onnx")
    fetched = inspect(built.path.parent, "dir")
    assert fetched.matches(built.sha256)
    assert fetched.matches(identity(built.path.parent))
    assert not fetched.matches("0" * 64)


def test_a_directory_download_is_searched_for_its_onnx_file(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    built = make_onnx("weights.onnx")
    (built.path.parent / "MLmodel").write_text("flavors:\n  onnx:\n    data: weights.onnx\n")
    assert onnx_file_in(built.path.parent) == built.path


def test_models_from_real_converters_at_their_default_options(tmp_path: Path) -> None:
    """skl2onnx as users call it: a ZipMap classifier, a Tfidf text pipeline (string input),
    a ColumnTransformer with a string column (two inputs, a mapping sample)."""
    import numpy as np
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    labels = np.array([0, 1, 1, 0])
    rows = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    zipmap = tmp_path / "zipmap.onnx"
    zipmap.write_bytes(
        to_onnx(LogisticRegression().fit(rows, labels), rows[:1]).SerializeToString()
    )
    check_onnx(zipmap, None, time_limit=60)

    texts = np.array(["good day", "bad day", "good night", "bad night"])
    text_model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    tfidf = tmp_path / "tfidf.onnx"
    tfidf.write_bytes(
        to_onnx(
            text_model, initial_types=[("text", StringTensorType([None, 1]))]
        ).SerializeToString()
    )
    check_onnx(tfidf, [["good day"], ["bad night"]], time_limit=60)

    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 4.0], "city": ["paris", "lyon"] * 2})
    columns = ColumnTransformer(
        [("n", StandardScaler(), ["amount"]), ("c", OneHotEncoder(), ["city"])]
    )
    tabular = make_pipeline(columns, LogisticRegression()).fit(frame, labels)
    inputs = [("amount", FloatTensorType([None, 1])), ("city", StringTensorType([None, 1]))]
    mixed = tmp_path / "mixed.onnx"
    mixed.write_bytes(to_onnx(tabular, initial_types=inputs).SerializeToString())
    check_onnx(mixed, {"amount": [[2.5]], "city": [["paris"]]}, time_limit=60)
    # "" is no known city: the refusal says which inputs got defaults and what to declare.
    with pytest.raises(ProbeError, match=r"fed zeros, \"\" or False to amount, city: declare"):
        check_onnx(mixed, None, time_limit=60)
