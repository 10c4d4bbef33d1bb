"""Safe promotion against a real ``mlflow server``: a breaking signature change is planned,
refused, then applied once acknowledged; a behaviour change past a limit likewise.

The models are scikit-learn classifiers converted by skl2onnx at its default options (the ZipMap
output users get).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from contracts.registry import BREAKING_CHANGE_ACKNOWLEDGED_TAG
from tests.integration.reconciler_cli import says_no_changes
from tests.integration.test_reconciler import (  # noqa: F401 (fixtures)
    Cli,
    cli,
    client,
    stages,
    transition_by_hand,
)
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.converters import (
    IRIS_ROWS,
    ConvertedModel,
    commit_to,
    declared_version,
    register_by_hand,
)
from tests.support.deploy import deploy, post, write_models_file
from tests.support.onnx_models import sha256_of
from tests.support.pipeline import Pipeline
from tests.support.processes import MlflowServer

pytestmark = pytest.mark.integration


def classifier(path: Path, features: int) -> dict[str, str]:
    """A LogisticRegression on ``features`` inputs, converted as users convert it."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(features)
    x = rng.standard_normal((40, features)).astype(np.float32)
    fitted = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_onnx(fitted, x[:1]).SerializeToString())
    return {"source": f"models/{path.name}", "sha256": sha256_of(path)}


def test_a_breaking_change_is_planned_refused_then_applied_once_acknowledged(
    cli: Cli,  # noqa: F811 (the fixture imported above)
    client: MlflowClient,  # noqa: F811
    unique_name: str,
) -> None:
    models = cli.models_file.parent / "models"
    v1 = classifier(models / "four.onnx", 4)
    v2 = classifier(models / "five.onnx", 5)
    cli.write([{"name": unique_name, "versions": [{**v1, "stage": "Production"}]}])
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert f"{unique_name} stage Production: nothing served -> new " in out
    assert "first version served" in out

    promotion = [{**v1, "stage": "Archived"}, {**v2, "stage": "Production", "aliases": ["live"]}]
    cli.write([{"name": unique_name, "versions": promotion}])
    code, out, _ = cli("plan")
    assert code == 2
    assert f"  {unique_name} stage Production: v1 -> new {v2['sha256'][:12]}: 1 breaking" in out
    assert (
        "    ! input X: tensor(float)[?,4] -> tensor(float)[?,5]    "
        "# breaking: dim 1: 4 -> 5 (fixed size changed)"
    ) in out
    assert "    = output output_probability: seq(map(int64,tensor(float)))\n" in out
    assert "apply refuses them." in out
    code, out, _ = cli("plan", "--format", "markdown")
    assert "| ! breaking | input ` X ` | ` tensor(float)[?,4] ` | ` tensor(float)[?,5] ` |" in out
    code, out, _ = cli("plan", "--format", "json")
    production, alias = json.loads(out)["signatures"]
    assert (production["follows"], production["served_version"]) == ("stage Production", "1")
    assert (production["breaking"], production["refused"]) == (True, True)
    assert (alias["follows"], alias["served_version"], alias["refused"]) == (
        "alias live",
        None,
        False,
    )

    code, out, err = cli("apply")
    assert code == 1
    assert f"FAILED: {unique_name}: refused stage Production: v1 -> v2" in out
    assert "input X: dim 1: 4 -> 5 (fixed size changed)" in out
    assert "breaking_change_acknowledged: <reason>" in out
    assert "1 failure(s)" in err
    # Registered (nothing is lost), but Production and its clients stay on v1.
    assert stages(client, unique_name) == {"1": "Production", "2": "None"}
    assert client.get_registered_model(unique_name).aliases == {}

    reason = "the app sends petal area as a fifth feature since release 2.4"
    promotion[1]["breaking_change_acknowledged"] = reason
    cli.write([{"name": unique_name, "versions": promotion}])
    code, out, _ = cli("plan")
    assert code == 2
    assert f"  {unique_name} stage Production: v1 -> v2: 1 breaking" in out
    assert f"BREAKING, acknowledged in models.yaml: {reason}" in out
    assert "apply refuses" not in out
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}
    assert client.get_registered_model(unique_name).aliases == {"live": "2"}
    code, out, _ = cli("plan")
    assert code == 0, out
    assert says_no_changes(out), out


def test_a_breaking_version_made_production_by_hand_is_undone_without_a_review(
    cli: Cli,  # noqa: F811
    client: MlflowClient,  # noqa: F811
    unique_name: str,
) -> None:
    """Found in a new user's trial: someone moves Production by hand to an old version whose
    signature differs (the servers refuse it and keep serving models.yaml's); putting
    models.yaml's version back is drift undone at once, not a breaking change to acknowledge
    nor a progressive rollout from the hand-set version."""
    models = cli.models_file.parent / "models"
    v1 = classifier(models / "four.onnx", 4)
    v2 = classifier(models / "five.onnx", 5)
    steps = {"steps": [50], "pause_seconds": 1, "min_requests": 1}
    declared = {
        "name": unique_name,
        "progressive": steps,
        "versions": [
            {**v1, "stage": "Archived"},
            {**v2, "stage": "Production", "breaking_change_acknowledged": "clients send five"},
        ],
    }
    cli.write([{"name": unique_name, "versions": [{**v1, "stage": "Production"}]}])
    assert cli("apply")[0] == 0
    cli.write([{**declared, "progressive": None}])
    code, out, err = cli("apply")
    assert code == 0, out + err
    cli.write([declared])
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}

    transition_by_hand(client, unique_name, "1", "Production")
    transition_by_hand(client, unique_name, "2", "Archived")
    code, out, err = cli("plan")
    assert code == 2, out + err
    assert f"~ stage {unique_name} v2: Archived -> Production    # stage differs" in out
    assert "BREAKING" not in out
    assert "progressive rollout" not in out
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}
    assert says_no_changes(cli("plan")[1])


def test_behaviour_on_the_sample_is_planned_and_a_limit_refuses_then_lets_through(
    cli: Cli,  # noqa: F811
    client: MlflowClient,  # noqa: F811
    unique_name: str,
) -> None:
    """Same signature, other predictions: a classifier retrained on labels that moved."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    models = cli.models_file.parent / "models"
    models.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    entries = []
    for name, labels in (("old", x[:, 0] > 0), ("new", x[:, 1] > 0)):
        fitted = LogisticRegression().fit(x, labels.astype(np.int64))
        path = models / f"{name}.onnx"
        path.write_bytes(to_onnx(fitted, x[:1]).SerializeToString())
        entries.append({"source": f"models/{path.name}", "sha256": sha256_of(path)})
    sample = x[:8].round(3).tolist()
    evaluation = cli.models_file.parent / "evaluation" / "holdout.csv"
    evaluation.parent.mkdir()
    evaluation.write_text(
        "sepal_length,sepal_width,petal_length,petal_width\n"
        + "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in x[20:60])
    )
    old, new = entries
    cli.write([{"name": unique_name, "versions": [{**old, "stage": "Production"}]}])
    assert cli("apply")[0] == 0

    model = {
        "name": unique_name,
        "behaviour_limits": {"max_differing_rows": 0},
        "evaluation_file": "evaluation/holdout.csv",
        "versions": [
            {**old, "stage": "Archived"},
            {**new, "stage": "Production", "sample_input": sample},
        ],
    }
    cli.write([model])
    code, out, _ = cli("plan", "--format", "json")
    (review,) = json.loads(out)["signatures"]
    assert review["breaking"] is False
    behaviour, holdout = review["behaviour"]
    assert (behaviour["rows_from"], holdout["rows_from"]) == (
        "sample_input",
        "evaluation/holdout.csv",
    )
    assert holdout["rows"] == 40
    assert holdout["differing_rows"] >= 1
    assert behaviour["rows"] == 8
    assert behaviour["differing_rows"] >= 1  # labels on another feature: some rows move
    assert {o["name"] for o in behaviour["outputs"]} == {"output_label", "output_probability"}
    assert behaviour["max_abs_difference"] > 0
    differing = behaviour["differing_rows"]
    code, out, err = cli("apply")
    assert code == 1
    assert (
        f"it answers past the limits of models.yaml (on sample_input "
        f"{differing} of 8 row(s) differ, max_differing_rows is 0; on evaluation/holdout.csv "
        f"{holdout['differing_rows']} of 40 row(s) differ, max_differing_rows is 0)"
    ) in out
    assert stages(client, unique_name) == {"1": "Production", "2": "None"}

    model["behaviour_limits"] = {"max_differing_rows": 40}
    cli.write([model])
    code, out, _ = cli("plan")
    assert (
        f"    behaviour on sample_input: {differing} of 8 row(s) differ, largest difference" in out
    )
    assert (
        f"    behaviour on evaluation/holdout.csv: {holdout['differing_rows']} of 40 row(s)" in out
    )
    assert "PAST A LIMIT" not in out
    code, out, err = cli("apply")
    assert code == 0, out + err
    assert stages(client, unique_name) == {"1": "Archived", "2": "Production"}


def test_a_version_another_team_serves_is_compared_too(
    cli: Cli,  # noqa: F811
    client: MlflowClient,  # noqa: F811
    unique_name: str,
    mlflow_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
    tmp_path: Path,
) -> None:
    """Served: a torch export (model.onnx + external data) logged with mlflow.onnx.log_model and
    promoted by hand. models.yaml brings a scikit-learn export in its place."""
    register_by_hand(mlflow_server.url, unique_name, converted("torch-export"), tmp_path / "theirs")
    ours = converted("sklearn-logistic-regression")
    source = commit_to(cli.models_file.parent, ours, "ours")
    entry = declared_version(ours, source, aliases=["champion"])
    cli.write([{"name": unique_name, "versions": [entry]}])
    code, out, _ = cli("plan", "--format", "json")
    assert code == 2
    (review,) = json.loads(out)["signatures"]
    assert review["follows"] == "stage Production, alias champion"
    assert (review["served_version"], review["compared"], review["refused"]) == ("1", True, True)
    removed = {t["name"] for t in review["tensors"] if t["becoming"] is None}
    assert "x" in removed  # the input the other team's clients send
    (behaviour,) = review["behaviour"]
    # The torch export takes one row at a time (x is [1, 4]): a problem shown, not a crash.
    assert behaviour["problem"].startswith("the served version cannot run sample_input: ")
    assert "input: x" in behaviour["problem"]
    code, out, _ = cli("apply")
    assert code == 1
    assert f"{unique_name}: refused stage Production, alias champion: v1 -> v2" in out
    assert stages(client, unique_name) == {"1": "Production", "2": "None"}
    assert client.get_registered_model(unique_name).aliases == {"champion": "1"}


def test_an_acknowledged_breaking_change_reaches_the_servers_and_is_served(
    mlflow_server: MlflowServer,
    converted: Callable[[str], ConvertedModel],
    tmp_path: Path,
    unique_name: str,
) -> None:
    """The acknowledgement travels as the version's tag and the manifest: servers with their
    default settings swap in the ZipMap-off retrain a data scientist re-exports (outputs
    renamed and retyped), instead of keeping the old version while status times out."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    pipeline = Pipeline(mlflow_server, tmp_path / "pipeline")
    first = converted("sklearn-logistic-regression")
    v1 = declared_version(first, commit_to(pipeline.repo, first, "v1"))
    deploy(pipeline, {unique_name: [v1]})
    try:
        features, labels = load_iris(return_X_y=True)
        retrained = LogisticRegression(max_iter=500).fit(features.astype(np.float32), labels)
        onnx_model = convert_sklearn(
            retrained,
            initial_types=[("input", FloatTensorType([None, 4]))],
            options={id(retrained): {"zipmap": False}},
        )
        path = pipeline.repo / "models" / "v2" / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(onnx_model.SerializeToString())
        reason = "clients read the probabilities as a tensor since release 3.1"
        v2 = {
            "source": "models/v2/model.onnx",
            "sha256": sha256_of(path),
            "stage": "Production",
            "sample_input": v1["sample_input"],
            "breaking_change_acknowledged": reason,
        }
        write_models_file(pipeline, {unique_name: [{**v1, "stage": "Archived"}, v2]})
        planned = pipeline.reconciler("plan", check=False)
        assert planned.returncode == 2, planned.stdout + planned.stderr
        assert f"BREAKING, acknowledged in models.yaml: {reason}" in planned.stdout
        pipeline.apply()

        assert (
            MlflowClient(mlflow_server.url)
            .get_model_version(unique_name, "2")
            .tags[BREAKING_CHANGE_ACKNOWLEDGED_TAG]
            == reason
        )
        pipeline.wait_served(unique_name, "2", timeout=120)
        answer = post(pipeline, f"/models/{unique_name}/predict", {"data": IRIS_ROWS[:2]})
        assert answer["modelVersion"] == "2"
        assert set(answer["outputs"]) == {"label", "probabilities"}
        assert np.shape(answer["outputs"]["probabilities"]) == (2, 3)
    except BaseException:
        print(pipeline.logs_tail())
        raise
    finally:
        pipeline.stop()
