"""add-version edits models.yaml in place and keeps its comments and formatting."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from contracts.digest import identity
from contracts.registry import Stage
from reconciler import document, spec
from reconciler.cli import main
from reconciler.edit import EditError, add_version, sample_input_from_json
from reconciler.errors import SourceError, SpecError
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.onnx_models import BuiltModel, mlp_model, sha256_of

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


@pytest.mark.parametrize("source", ["", "   ", "\t\n"])
def test_an_empty_source_is_refused_as_such_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # "" once named the current directory: the whole repository was read as a directory source
    # and refused for a symbolic link in it (the volume's `current`).
    (tmp_path / "current").symlink_to(tmp_path)
    path = tmp_path / "models.yaml"
    text = "models: []\n"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EditError, match=r"the source is empty .*: give a repository") as caught:
        add_version(path, model="m", source=source, stage=Stage.PRODUCTION)
    assert "symbolic link" not in str(caught.value)
    assert path.read_text() == text


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


def test_add_version_identifies_a_directory_by_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "models" / "torch"
    directory.mkdir(parents=True)
    onnx.save_model(
        mlp_model(), directory / "model.onnx", save_as_external_data=True,
        location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    path = tmp_path / "models.yaml"
    path.write_text("# kept\nmodels: []\n")
    monkeypatch.chdir(tmp_path / "models")
    entry = add_version(path, model="m", source="torch").entry
    assert entry == {"source": "models/torch", "sha256": identity(directory)}
    assert path.read_text() == (
        "# kept\nmodels:\n  - name: m\n    versions:\n"
        f"      - source: models/torch\n        sha256: {identity(directory)}\n"
    )
    assert spec.load(path).local_path("models/torch") == directory


def test_add_version_refuses_a_file_outside_the_repository_unread(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"outside")
    path = tmp_path / "repo" / "models.yaml"
    path.write_text("models: []\n")
    with pytest.raises(SourceError) as caught:
        add_version(path, model="m", source=str(secret), sha256="a" * 64)
    assert str(caught.value) == (
        f"cannot read source ../secret.onnx: leaves the repository ({tmp_path / 'repo'}); "
        "sources are files in it"
    )
    assert sha256_of(secret) not in str(caught.value)
    assert path.read_text() == "models: []\n"


class CopyingDownloader:
    """A tiny fake of MLflow's artifact download: the URI names a local directory here."""

    def __init__(self, artifacts: Path) -> None:
        self.artifacts = artifacts
        self.asked: list[str] = []

    def download(self, uri: str, destination: Path) -> Path:
        self.asked.append(uri)
        return Path(shutil.copytree(self.artifacts, destination / "model"))


def test_add_version_downloads_a_uri_source_to_compute_or_check_its_identity(
    tmp_path: Path,
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    onnx.save_model(
        mlp_model(), artifacts / "model.onnx", save_as_external_data=True,
        location="model.onnx.data", size_threshold=0,
    )  # fmt: skip
    (artifacts / "MLmodel").write_text("flavors: {onnx: {data: model.onnx}}\n")
    path = tmp_path / "models.yaml"
    path.write_text("models: []\n")
    downloader = CopyingDownloader(artifacts)
    entry = add_version(path, model="m", source="runs:/abc/model", downloader=downloader).entry
    assert entry == {"source": "runs:/abc/model", "sha256": identity(artifacts)}
    with pytest.raises(EditError) as caught:
        add_version(
            path, model="n", source="runs:/abc/model", sha256="c" * 64, downloader=downloader
        )
    assert str(caught.value) == (
        f"--sha256 {'c' * 64} does not match runs:/abc/model (its sha256: {identity(artifacts)})"
    )
    assert downloader.asked == ["runs:/abc/model"] * 2
    assert [m.name for m in spec.load(path, check_files=False).file.models] == ["m"]


def test_add_version_refuses_a_uri_scheme_models_yaml_does_not_take(tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=re.escape("unsupported URI 'https://example.com/m.onnx'")
    ):
        add_version(tmp_path / "models.yaml", model="m", source="https://example.com/m.onnx")


# --- --sample-input ------------------------------------------------------------------------------

TRICKY = ["a,b", "x]", "{y", "? k", "- z", "null", "~", "yes", "01", "1e3", "", " lead", "é",
          "line\nbreak", "'q'", '"d"', "#c", "&a", "*b", "!t", "\\", "\x1b"]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("[[5.1, 3.5, 1.4, 0.2], [6, 2.9, 4.5, 1.5]]",
         "[[5.1, 3.5, 1.4, 0.2], [6, 2.9, 4.5, 1.5]]"),
        ('["good movie", "bad plot"]', '["good movie", "bad plot"]'),
        ('{"city": [["Paris"]], "size": [[3.5, 2]]}',
         '{"city": [["Paris"]], "size": [[3.5, 2]]}'),
        ("[[1e-7, -0.0, 1e300, 12345678901234567890]]",
         "[[1e-07, -0.0, 1e+300, 12345678901234567890]]"),
    ],
)  # fmt: skip
def test_add_version_writes_the_sample_input_in_flow_style_keeping_comments(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel], given: str, written: str
) -> None:
    built = make_onnx("v1.onnx", seed=1)
    path = tmp_path / "models.yaml"
    path.write_text("# The registry.\nmodels:  # ours\n  - name: m\n    versions: []\n")
    sample = sample_input_from_json(given)
    add_version(path, model="m", source=str(built.path), sample_input=sample)
    assert path.read_text() == (
        "# The registry.\nmodels:  # ours\n  - name: m\n    versions:\n"
        f"      - source: models/v1.onnx\n        sha256: {built.sha256}\n"
        f"        sample_input: {written}\n"
    )
    [version] = spec.load(path).file.models[0].versions
    assert version.sample_input == json.loads(given)


def test_every_string_of_a_sample_input_reads_back_as_written(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    """Flow YAML has its own syntax (a plain ``? k`` in a list is a key): strings are quoted."""
    built = make_onnx("v1.onnx", seed=1)
    path = tmp_path / "models.yaml"
    path.write_text("models: []\n")
    sample = {"? k": [TRICKY], "n": [["#", ","]]}
    add_version(path, model="m", source=str(built.path), sample_input=sample)
    [version] = spec.load(path).file.models[0].versions
    assert version.sample_input == sample


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("[[1, 2], [3]]", "--sample-input: rows[1] is shaped [1], rows[0] [2]: rows are alike"),
        ('[[1, "a"]]', "--sample-input: rows mixes number and string: one kind of value per input"),
        ("[[1, null]]", "--sample-input: rows[0][1]: null is not a value (numbers, strings or "
         "booleans)"),
        ("[]", "--sample-input: rows: an empty list (give at least one row)"),
        ('{"x": [[1]], "y": [[true, 2]]}', "--sample-input: input 'y' mixes boolean and number"),
        ("{}", "--sample-input: an empty mapping: give {input name: rows} for at least one input"),
        ("5", "--sample-input: a list of rows (one input) or a mapping of input name to rows"),
        ("[[1, 2]", "--sample-input is not JSON (Expecting ',' delimiter: line 1 column 8 (char 7)"
         "): give '[[5.1, 3.5, 1.4, 0.2]]' (rows), or '{\"input name\": rows}' (several inputs)"),
        ("[[5.1, 3.5], [1, 2]", "--sample-input is not JSON (Expecting ',' delimiter"),
        ("[[NaN]]", "--sample-input is not JSON (NaN is not a JSON number)"),
        ("[[5.1 3.5]]", "--sample-input is not JSON (Expecting ',' delimiter"),
        ("", "--sample-input is not JSON (Expecting value: line 1 column 1 (char 0))"),
    ],
)  # fmt: skip
def test_a_sample_input_is_refused_in_the_words_models_yaml_gets(given: str, message: str) -> None:
    with pytest.raises(EditError) as caught:
        sample_input_from_json(given)
    assert str(caught.value).startswith(message)


def test_the_command_line_takes_a_sample_input_and_refuses_a_bad_one_leaving_the_file(
    tmp_path: Path,
    make_onnx: Callable[..., BuiltModel],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_onnx("v1.onnx", seed=1)
    path = tmp_path / "models.yaml"
    path.write_text("models: []  # none yet\n")
    monkeypatch.chdir(tmp_path)
    argv = ["add-version", "-f", str(path), "--model", "m", "--source", "models/v1.onnx"]
    assert main([*argv, "--sample-input", "[[1, 2], [3]]"]) == 1
    assert capsys.readouterr().err == (
        "error: --sample-input: rows[1] is shaped [1], rows[0] [2]: rows are alike\n"
    )
    assert path.read_text() == "models: []  # none yet\n"
    assert main([*argv, "--sample-input", '[["0.5", "x"]]', "--stage", "Staging"]) == 0
    [version] = spec.load(path).file.models[0].versions
    assert (version.sample_input, version.stage) == ([["0.5", "x"]], Stage.STAGING)
    assert '        sample_input: [["0.5", "x"]]\n' in path.read_text()
    capsys.readouterr()
    v2 = make_onnx("v2.onnx", seed=2)
    argv = ["add-version", "-f", str(path), "--model", "m", "--source", "models/v2.onnx"]
    assert main([*argv, "--stage", "Production"]) == 0
    v3 = make_onnx("v3.onnx", seed=3)
    argv = ["add-version", "-f", str(path), "--model", "m", "--source", "models/v3.onnx"]
    assert main([*argv, "--stage", "Production"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-2:]
        == [  # what else it changed, said
            f"added to {path}: m models/v3.onnx sha256 {v3.sha256}",
            f"  and in {path}: m {v2.sha256[:12]} stage Production -> Archived",
        ]
    )
