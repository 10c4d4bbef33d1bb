"""add-version edits models.yaml in place and keeps its comments and formatting."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.registry import Stage
from reconciler import document, spec
from reconciler.edit import EditError, add_version
from reconciler.errors import SpecError
from tests.support.onnx_models import BuiltModel

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_file_round_trips_byte_for_byte() -> None:
    text = (REPO / "models.yaml").read_text()
    yaml = document.round_trip_yaml()
    out = io.StringIO()
    yaml.dump(yaml.load(text), out)
    assert out.getvalue() == text


def test_add_version_promotes_moves_the_alias_and_keeps_comments(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = make_onnx("v1.onnx", seed=1), make_onnx("v2.onnx", seed=2)
    path = tmp_path / "models.yaml"
    path.write_text(
        "# The registry.\nmodels:\n  - name: m  # our model\n    versions:\n"
        f"      - source: models/v1.onnx\n        sha256: {v1.sha256}\n"
        "        stage: Production\n        aliases: [live]\n"
    )
    monkeypatch.chdir(tmp_path)
    add_version(path, model="m", source="models/v2.onnx", stage=Stage.PRODUCTION, aliases=["live"])
    assert path.read_text() == (
        "# The registry.\nmodels:\n  - name: m  # our model\n    versions:\n"
        f"      - source: models/v1.onnx\n        sha256: {v1.sha256}\n"
        "        stage: Archived\n"
        f"      - source: models/v2.onnx\n        sha256: {v2.sha256}\n"
        "        stage: Production\n        aliases: [live]\n"
    )
    with pytest.raises(EditError, match="already declares"):
        add_version(path, model="m", source=str(v2.path))
    add_version(path, model="other", source="s3://b/k.onnx", sha256="c" * 64)
    assert [m.name for m in spec.load(path).file.models] == ["m", "other"]


def test_a_uri_needs_its_sha256(tmp_path: Path) -> None:
    with pytest.raises(EditError, match="pass --sha256"):
        add_version(tmp_path / "models.yaml", model="m", source="s3://b/k.onnx")


def test_an_invalid_file_is_reported_located_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    text = "models:\n  - name: m\n    versions: [\n"
    path.write_text(text)
    with pytest.raises(SpecError) as caught:
        add_version(path, model="m", source="s3://b/k", sha256="a" * 64)
    assert [p.line for p in caught.value.problems] == [4]
    assert "not valid YAML" in str(caught.value)
    assert path.read_text() == text


def test_a_refused_edit_names_the_file_not_its_scratch_copy(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("models: []\n")
    with pytest.raises(SpecError) as caught:
        add_version(path, model="bad name", source="s3://b/k", sha256="a" * 64)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:2: models[0].name: 'bad name' is not a valid model name: letters, digits, . _ -"
    ]
    assert path.read_text() == "models: []\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.yaml"]
