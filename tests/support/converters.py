"""ONNX models as their users make them: real converters at their DEFAULT options.

skl2onnx classifiers keep ZipMap (probabilities as ``seq(map(...))``), the text pipeline takes
``tensor(string)``, the ColumnTransformer has two named inputs, onnxmltools converts LightGBM
with its defaults, and ``torch.onnx.export`` (dynamo) writes ``model.onnx`` plus external data.
Each model comes with the rows a client would send and what onnxruntime answers in-process, so a
test can hold a server's answer against it.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from contracts.digest import identity, list_files
from contracts.tensors import numpy_dtype

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.4, 1.4], [7.7, 3.0, 6.1, 2.3]]
TEXTS = ["the cat sat on the mat", "a dog barks at the mailman", "cats purr", "dogs fetch sticks"]


@dataclass(frozen=True, slots=True)
class ConvertedModel:
    """A converter's output: ``directory`` holds exactly the files the converter wrote."""

    kind: str
    directory: Path
    rows: Mapping[str, list[Any]]
    """Input name -> the rows a client sends (JSON values), every input the same row count."""
    model_file: str = "model.onnx"

    @property
    def path(self) -> Path:
        return self.directory / self.model_file

    @property
    def files(self) -> list[str]:
        return list(list_files(self.directory))

    @property
    def has_external_data(self) -> bool:
        return len(self.files) > 1

    @property
    def source_path(self) -> Path:
        """What to declare: the ONNX file alone, or the directory when weights live beside it."""
        return self.directory if self.has_external_data else self.path

    @property
    def sha256(self) -> str:
        """The version identity models.yaml declares for :attr:`source_path`."""
        return identity(self.source_path)

    @property
    def input_names(self) -> list[str]:
        return list(self.rows)

    def session(self) -> onnxruntime.InferenceSession:
        return onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])

    def feed(self, rows: Mapping[str, list[Any]] | None = None) -> dict[str, np.ndarray[Any, Any]]:
        """The rows as onnxruntime takes them, typed from the model's declared inputs."""
        rows = rows or self.rows
        return {
            arg.name: np.array(rows[arg.name], dtype=numpy_dtype(arg.type))
            for arg in self.session().get_inputs()
        }

    def expected(self, rows: Mapping[str, list[Any]] | None = None) -> dict[str, Any]:
        """What onnxruntime answers in-process: output name -> JSON-shaped value."""
        session = self.session()
        values = session.run(None, self.feed(rows))
        return {
            arg.name: jsonable(value)
            for arg, value in zip(session.get_outputs(), values, strict=True)
        }

    def sample_input(self) -> list[Any] | dict[str, list[Any]]:
        """models.yaml's ``sample_input``: the rows (one input) or a mapping (several)."""
        if len(self.rows) == 1:
            return next(iter(self.rows.values()))
        return dict(self.rows)

    def predict_body(self) -> dict[str, Any]:
        """A ``/predict`` body: ``{"data": rows}``, or keyed by input name for several inputs."""
        return {"data": self.sample_input()}

    def v2_body(self) -> dict[str, Any]:
        """An Open Inference Protocol request: one tensor per input, data flattened."""
        from contracts.tensors import v2_datatype

        inputs = []
        for arg in self.session().get_inputs():
            array = np.array(self.rows[arg.name], dtype=numpy_dtype(arg.type))
            inputs.append(
                {
                    "name": arg.name,
                    "shape": list(array.shape),
                    "datatype": v2_datatype(arg.type),
                    "data": array.reshape(-1).tolist(),
                }
            )
        return {"inputs": inputs}


def jsonable(value: Any) -> Any:
    """An onnxruntime output as JSON carries it: arrays as nested lists, map keys as strings."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same(actual: Any, expected: Any, *, where: str = "answer", rtol: float = 1e-5) -> None:
    """Equal up to float rounding (a float32 through JSON); every key, length and label exact."""
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"{where}: expected an object, got {actual!r}"
        assert sorted(map(str, actual)) == sorted(map(str, expected)), (
            f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        )
        for key, item in expected.items():
            assert_same(actual[str(key)], item, where=f"{where}.{key}", rtol=rtol)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same(got, want, where=f"{where}[{index}]", rtol=rtol)
    elif isinstance(expected, float):
        is_number = isinstance(actual, int | float) and not isinstance(actual, bool)
        assert is_number, f"{where}: expected a number, got {actual!r}"
        assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=1e-7), (
            f"{where}: {actual!r} != {expected!r}"
        )
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def flatten(value: Any) -> list[Any]:
    """A nested list's leaves in row-major order (how V2 carries a tensor's data)."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


# --- the builders: each writes into an empty directory, as a user's script would ---------------


def _save(model: Any, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model.SerializeToString())


def _iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_iris  # ships with scikit-learn: no download

    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels


def sklearn_logistic_regression(directory: Path, *, int64_input: bool = False) -> ConvertedModel:
    """With ``int64_input``, fitted on whole numbers (the iris measurements in millimetres) and
    converted for an ``int64`` input, as a model of counts is."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
    from sklearn.linear_model import LogisticRegression

    features, labels = _iris()
    kind, rows, tensor_type = "sklearn-logistic-regression", IRIS_ROWS, FloatTensorType
    if int64_input:
        features = np.rint(features * 10).astype(np.int64)
        rows = [[round(value * 10) for value in row] for row in IRIS_ROWS]
        kind, tensor_type = f"{kind}-int64", Int64TensorType
    model = LogisticRegression(max_iter=500).fit(features, labels)
    _save(convert_sklearn(model, initial_types=[("input", tensor_type([None, 4]))]), directory)
    return ConvertedModel(kind, directory, {"input": rows})


def sklearn_random_forest(directory: Path, *, string_labels: bool = False) -> ConvertedModel:
    """With ``string_labels``, fitted on the iris species' names: ``output_label`` is a string
    tensor and the probabilities are ``seq(map(string, ...))``."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    features, labels = _iris()
    kind = "sklearn-random-forest"
    if string_labels:
        labels = np.array(["setosa", "versicolor", "virginica"])[labels]
        kind = f"{kind}-string-labels"
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    model.fit(features, labels)
    _save(convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 4]))]), directory)
    return ConvertedModel(kind, directory, {"input": IRIS_ROWS})


def sklearn_text_pipeline(directory: Path) -> ConvertedModel:
    """TfidfVectorizer + LogisticRegression on strings; string class labels."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("tfidf", TfidfVectorizer()), ("classifier", LogisticRegression())])
    pipeline.fit(TEXTS, ["cat", "dog", "cat", "dog"])
    onnx_model = convert_sklearn(pipeline, initial_types=[("text", StringTensorType([None, 1]))])
    _save(onnx_model, directory)
    rows = {"text": [["the cat sat"], ["a dog fetches"]]}
    return ConvertedModel("sklearn-text-pipeline", directory, rows)


def sklearn_column_transformer(directory: Path) -> ConvertedModel:
    """A numeric and a string categorical column (two named inputs) into a classifier."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = pd.DataFrame(
        {
            "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "color": ["red", "blue", "red", "green", "blue", "green"],
        }
    )
    prepare = ColumnTransformer(
        [
            ("numeric", StandardScaler(), ["size"]),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ]
    )
    pipeline = Pipeline([("prepare", prepare), ("classifier", LogisticRegression())])
    pipeline.fit(frame, [0, 1, 0, 1, 1, 0])
    initial_types = [("size", FloatTensorType([None, 1])), ("color", StringTensorType([None, 1]))]
    _save(convert_sklearn(pipeline, initial_types=initial_types), directory)
    rows = {"size": [[1.5], [5.5]], "color": [["red"], ["green"]]}
    return ConvertedModel("sklearn-column-transformer", directory, rows)


def lightgbm_classifier(directory: Path) -> ConvertedModel:
    import lightgbm
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    features, labels = _iris()
    model = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1)
    model.fit(features, labels)
    initial_types = [("input", FloatTensorType([None, 4]))]
    _save(onnxmltools.convert_lightgbm(model, initial_types=initial_types), directory)
    return ConvertedModel("lightgbm-classifier", directory, {"input": IRIS_ROWS})


def torch_export(directory: Path, seed: int = 0, *, dynamic_batch: bool = False) -> ConvertedModel:
    """``torch.onnx.export`` at its defaults (dynamo): model.onnx + model.onnx.data.

    ``seed`` sets the initial weights: another seed, another version of the same model.
    ``dynamic_batch``: the batch axis dynamic (``dynamic_axes``, as most exports ask), not 1.
    """
    import contextlib
    import io
    import warnings

    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 128)
            self.out = torch.nn.Linear(128, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    # The exporter prints its progress and warns about its own internals; neither is ours.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Classifier().eval(),
            (torch.zeros(1, 4),),
            str(directory / "model.onnx"),
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}} if dynamic_batch else None,
        )
    return ConvertedModel("torch-export", directory, {"x": IRIS_ROWS[:1]})


BUILDERS: dict[str, Callable[[Path], ConvertedModel]] = {
    "sklearn-logistic-regression": sklearn_logistic_regression,
    "sklearn-random-forest": sklearn_random_forest,
    "sklearn-text-pipeline": sklearn_text_pipeline,
    "sklearn-column-transformer": sklearn_column_transformer,
    "lightgbm-classifier": lightgbm_classifier,
    "torch-export": torch_export,
}
"""Every converter model, by kind."""

VARIANTS: dict[str, Callable[[Path], ConvertedModel]] = {
    "sklearn-logistic-regression-int64": partial(sklearn_logistic_regression, int64_input=True),
    "sklearn-random-forest-string-labels": partial(sklearn_random_forest, string_labels=True),
}
"""The same converters on other data, for the tests of what a server does with a type (an int64
input, string labels in a tree ensemble); the world tests serve :data:`BUILDERS` only."""

ZIPMAP_KINDS = (
    "sklearn-logistic-regression",
    "sklearn-random-forest",
    "sklearn-text-pipeline",
    "sklearn-column-transformer",
    "lightgbm-classifier",
)
"""The classifiers whose default export has a ``seq(map(...))`` probabilities output."""


# --- logged as users log them ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedModel:
    """What ``mlflow.onnx.log_model`` in a run left in MLflow."""

    model_uri: str
    """``models:/m-<id>``, what log_model returns."""
    model_id: str
    run_id: str
    storage_uri: str
    """The LoggedModel's artifact location (``mlflow-artifacts:/<exp>/models/m-<id>/artifacts``)."""
    stored: Path
    """A local copy of every file MLflow stored (MLmodel, env files, model.onnx, external data)."""

    @property
    def sha256(self) -> str:
        """The identity of the artifact as stored (log_model re-saves the ONNX file)."""
        return identity(self.stored)


def log_onnx_model(
    tracking_uri: str,
    model: ConvertedModel,
    download_to: Path,
    *,
    registered_model_name: str | None = None,
) -> LoggedModel:
    """``mlflow.onnx.log_model(onnx.load(path), name="model")`` inside ``mlflow.start_run()``.

    With ``registered_model_name``, log_model also registers it (version 1 of a new model), as
    a data scientist's training script does in one call.
    """
    import warnings

    import mlflow
    import mlflow.onnx
    import onnx

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with warnings.catch_warnings():  # MLflow's notes on signatures and type hints
            warnings.simplefilter("ignore", UserWarning)
            with mlflow.start_run() as run:
                info = mlflow.onnx.log_model(
                    onnx.load(str(model.path)),
                    name="model",
                    registered_model_name=registered_model_name,
                )
        client = mlflow.MlflowClient(tracking_uri)
        storage_uri = client.get_logged_model(info.model_id).artifact_location
        download_to.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=storage_uri, dst_path=str(download_to), tracking_uri=tracking_uri
        )
    finally:
        mlflow.set_tracking_uri(previous)
    return LoggedModel(info.model_uri, info.model_id, run.info.run_id, storage_uri, Path(local))


def register_by_hand(tracking_uri: str, name: str, model: ConvertedModel, scratch: Path) -> None:
    """Another team's model: log_model registers it, then a stage, an alias, tags and a
    description, none of them the reconciler's."""
    import warnings

    from mlflow import MlflowClient

    log_onnx_model(tracking_uri, model, scratch, registered_model_name=name)
    client = MlflowClient(tracking_uri)
    with warnings.catch_warnings():  # stages are deprecated by MLflow, still what teams use
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, "1", "Production")
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_tag(name, "team", "fraud")
    client.set_model_version_tag(name, "1", "validated_by", "someone-else")
    client.update_registered_model(name, description="Not ours: registered by hand")


@dataclass(frozen=True, slots=True)
class LoggedArtifact:
    """A model uploaded with ``MlflowClient.log_artifact`` into a run's ``model/`` directory."""

    run_id: str
    runs_uri: str
    """``runs:/<run id>/model/model.onnx`` for a file, ``runs:/<run id>/model`` for a directory."""
    artifacts_uri: str
    """The same place as an ``mlflow-artifacts:`` URI (the run's artifact URI + path)."""


def log_as_artifact(tracking_uri: str, model: ConvertedModel) -> LoggedArtifact:
    """A run with the converter's files logged one by one under ``model/``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id="0", run_name=f"log-artifact-{model.kind}")
    for name in model.files:
        parent = "/".join(["model", *name.split("/")[:-1]])
        client.log_artifact(run.info.run_id, str(model.directory / name), artifact_path=parent)
    client.set_terminated(run.info.run_id)
    path = "model" if model.has_external_data else f"model/{model.model_file}"
    return LoggedArtifact(
        run.info.run_id,
        f"runs:/{run.info.run_id}/{path}",
        f"{run.info.artifact_uri}/{path}",
    )


# --- declared in models.yaml -------------------------------------------------------------------


def commit_to(repository: Path, model: ConvertedModel, folder: str) -> str:
    """Copy what a user commits into ``repository/models/<folder>/``: the ONNX file, or the whole
    directory with its external data. Returns the source to declare (relative to the root)."""
    target = repository / "models" / folder
    if model.has_external_data:
        shutil.copytree(model.directory, target)
        return f"models/{folder}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.path, target / model.model_file)
    return f"models/{folder}/{model.model_file}"


def declared_version(
    model: ConvertedModel,
    source: str,
    *,
    sha256: str | None = None,
    stage: str | None = "Production",
    aliases: Sequence[str] = (),
) -> dict[str, Any]:
    """A models.yaml ``versions:`` entry for ``model`` with its rows as ``sample_input``."""
    entry: dict[str, Any] = {"source": source, "sha256": sha256 or model.sha256}
    if stage is not None:
        entry["stage"] = stage
    if aliases:
        entry["aliases"] = list(aliases)
    entry["sample_input"] = model.sample_input()
    return entry


SOURCE_KINDS = (
    "logged-model-id",
    "logged-model-storage",
    "logged-model-run",
    "runs-uri",
    "mlflow-artifacts",
    "model-version",
    "model-alias",
    "repo-file",
    "repo-dir",
)
"""Every way a team hands a model to models.yaml (besides ``s3://``): ``models:/m-<id>``, the
LoggedModel's storage URI and ``runs:/<run>/model`` (``mlflow.onnx.log_model``), ``runs:/`` and
``mlflow-artifacts:`` (``MlflowClient.log_artifact``), ``models:/<name>/<version>`` and
``models:/<name>@<alias>`` (a training script's own registered model), a repository file and a
repository directory."""


def declare_through(
    source_kind: str,
    model: ConvertedModel,
    tracking_uri: str,
    repository: Path,
    *,
    scratch: Path,
    prefix: str,
) -> dict[str, Any]:
    """Produce ``model`` the way a team produces this kind of source; its models.yaml entry.

    ``source_kind`` is one of :data:`SOURCE_KINDS` but ``s3`` (which needs an S3 endpoint).
    """
    from mlflow import MlflowClient

    scratch = scratch / source_kind
    if source_kind == "logged-model-id":
        logged = log_onnx_model(tracking_uri, model, scratch)
        return declared_version(model, logged.model_uri, sha256=logged.sha256)
    if source_kind == "logged-model-storage":
        logged = log_onnx_model(tracking_uri, model, scratch)
        return declared_version(model, logged.storage_uri, sha256=logged.sha256)
    if source_kind == "logged-model-run":  # what MLflow's docs and UI still show
        logged = log_onnx_model(tracking_uri, model, scratch)
        return declared_version(model, f"runs:/{logged.run_id}/model", sha256=logged.sha256)
    if source_kind == "runs-uri":
        return declared_version(model, log_as_artifact(tracking_uri, model).runs_uri)
    if source_kind == "mlflow-artifacts":
        return declared_version(model, log_as_artifact(tracking_uri, model).artifacts_uri)
    if source_kind in ("model-version", "model-alias"):
        # A training script that logs and registers in one call (then picks it with an alias).
        training = f"{prefix}-training-{source_kind}"
        logged = log_onnx_model(tracking_uri, model, scratch, registered_model_name=training)
        if source_kind == "model-version":
            return declared_version(model, f"models:/{training}/1", sha256=logged.sha256)
        MlflowClient(tracking_uri).set_registered_model_alias(training, "candidate", "1")
        return declared_version(model, f"models:/{training}@candidate", sha256=logged.sha256)
    if source_kind in ("repo-file", "repo-dir"):
        return declared_version(model, commit_to(repository, model, source_kind))
    raise ValueError(f"unknown source kind {source_kind!r}")
