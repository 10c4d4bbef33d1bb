"""models.yaml validation: every problem, each with file:line:field; the JSON Schema is current."""

from __future__ import annotations

import json
import os
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contracts.digest import identity
from reconciler import document, spec
from reconciler.cli import main
from reconciler.errors import SourceError, SpecError
from tests.reconciler.logging_fixture import restore_logging  # noqa: F401 (autouse)
from tests.support.onnx_models import BuiltModel, mlp_model, sha256_of, write_mlp

REPO = Path(__file__).resolve().parents[2]
A, B = "a" * 64, "b" * 64


def problems(tmp_path: Path, text: str, *, check_files: bool = False) -> list[str]:
    path = tmp_path / "models.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as caught:
        spec.load(path, check_files=check_files)
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"""\
            models:
              - name: m
                descripton: typo
                versions:
                  - source: s3://b/k
                    sha256: {A}
                    stage: Prod
            """,
            [
                "3: models[0].descripton: unknown field (check its spelling and indentation)",
                "7: models[0].versions[0].stage: Input should be 'None', 'Staging', "
                "'Production' or 'Archived'",
            ],
            id="unknown-key-and-bad-stage",
        ),
        pytest.param(
            f"""\
            models:
              - name: m
                versions:
                  - source: s3://b/1
                    sha256: {A}
                    stage: Production
                    aliases: [live]
                  - source: s3://b/2
                    sha256: {A}
                    stage: Production
                    aliases: [live]
            """,
            [
                "9: models[0].versions[1].sha256: same sha256 as versions[0]; sha256 is unique per "
                "model",
                "10: models[0].versions[1].stage: a second Production version (versions[0] is "
                "Production); at most one per model",
                "11: models[0].versions[1].aliases[0]: alias 'live' already names versions[0]; an "
                "alias names one version",
            ],
            id="cross-field-rules",
        ),
        pytest.param(
            f"""\
            models:
              - name: m
                versions:
                  - source: http://example.com/m.onnx
                    sha256: {A}
                  - source: /abs/m.onnx
                    sha256: {B}
                    aliases: [latest]
            """,
            [
                "4: models[0].versions[0].source: unsupported URI 'http://example.com/m.onnx': "
                "use a path relative to models.yaml or an s3://, runs:/, models:/, "
                "mlflow-artifacts: URI",
                "6: models[0].versions[1].source: absolute path: give a path relative to "
                "models.yaml",
                "8: models[0].versions[1].aliases[0]: 'latest' is reserved by MLflow (latest, "
                "v<number>); choose another alias",
            ],
            id="sources-and-reserved-alias",
        ),
        pytest.param(
            f"""\
            models:
              - name: m
                versions:
                  - source: s3://b/1
                    sha256: {A}
                rollout:
                  alias: nope
                  mode: canary
                  weight: 10
            """,
            [
                "6: models[0].rollout: a rollout needs a Production version beside the candidate",
                "7: models[0].rollout.alias: no version of 'm' has alias 'nope'",
            ],
            id="rollout-candidate-must-exist",
        ),
        pytest.param(
            f"""\
            models:
              - name: m
                versions:
                  - source: s3://b/1
                    sha256: {A}
                    stage: Production
                  - source: s3://b/2
                    sha256: {B}
                    stage: Staging
                progressive:
                  steps: [10, canary, 0, true]
                  pause_seconds: 0
                  max_error_rate: 2
              - name: n
                versions:
                  - source: s3://b/1
                    sha256: {A}
                    stage: Production
                rollout: {{stage: Staging, mode: canary, weight: 10}}
                progressive: {{steps: [10], max_disagreement: 0.1}}
            """,
            [
                "11: models[0].progressive.steps[1]: 'canary' is not a step: give a canary share "
                "in percent (an integer from 1 to 100) or 'shadow'",
                "11: models[0].progressive.steps[2]: 0 is not a step: give a canary share in "
                "percent (an integer from 1 to 100) or 'shadow'",
                "11: models[0].progressive.steps[3]: True is not a step: give a canary share in "
                "percent (an integer from 1 to 100) or 'shadow'",
                "12: models[0].progressive.pause_seconds: Input should be greater than 0",
                "13: models[0].progressive.max_error_rate: Input should be less than or equal to 1",
                "19: models[1].rollout.stage: the candidate is the Staging version, but 0 "
                "versions are Staging (need exactly one)",
                "20: models[1].progressive: a progressive rollout moves traffic itself: remove "
                "the manual `rollout:` section of this model (or this section)",
                "20: models[1].progressive.max_disagreement: applies to shadow steps, and "
                "`steps` has none: add a `shadow` step or remove it",
            ],
            id="progressive-rules",
        ),
        pytest.param(
            """\
            models:
              - name: m
                versions: [
            """,
            [
                "4: not valid YAML: while parsing a flow node expected the node content, but found "
                "'<stream end>'"
            ],
            id="not-yaml",
        ),
    ],
)
def test_every_problem_is_reported_with_its_line(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert problems(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"models:\n  - name: m\xff\n",
                     "2: not UTF-8 text (byte 0xff); save the file as UTF-8", id="not-utf8"),
        pytest.param(b"models:\n  - name: m\x07\n",
                     "2: not valid YAML: character #x0007: special characters are not allowed",
                     id="control-character"),
        pytest.param(b"models:\n  - &a [*a]\n",
                     "2: models[0][0]: an alias refers to its own anchor (recursive data)",
                     id="recursive-alias"),
        pytest.param(b"models:\n  - name: &a m\n    description: &a d\n",
                     "3: models[0].description: anchor &a is defined twice; give each anchor "
                     "one name", id="reused-anchor"),
        pytest.param(b"# 98\n> #:? &}bsha256: :[*asha256: ?---\n\\b :5\xef\xbb\xbf[!!binary '2- ]"
                     b"!!binary 59\t1 1\\}>",
                     " not valid YAML: the round-trip parser cannot read it (check comments, "
                     "indentation)", id="a-file-ruamel-asserts-on"),
        pytest.param(b"models:\n  - name: m\n    prune: " + b"9" * 5000 + b"\n",
                     "3: models[0].prune: a number with more than 4300 digits",
                     id="huge-integer"),
        pytest.param(b"models:\n  - name: " + b"[" * 100 + b"]" * 100 + b"\n",
                     "2: models[0].name" + "[0]" * 61 + ": nested deeper than 64 levels",
                     id="deep-nesting"),
        pytest.param(b"models: []\n" + b"# padding\n" * 120_000,
                     "104858: larger than 1048576 bytes (1 MiB); split it or remove what is unused",
                     id="too-large"),
        pytest.param(b"- m\n", "1: the file must be a mapping with a `models:` list",
                     id="not-a-mapping"),
        pytest.param(b"models:\n  - name: !custom m\n", "2: models[0].name: YAML tag !custom: "
                     "models.yaml takes plain values, write it out", id="local-tag"),
        pytest.param(b"models: !!python/object:os.system []\n", "1: models: YAML tag "
                     "tag:yaml.org,2002:python/object:os.system: models.yaml takes plain values, "
                     "write it out", id="python-tag"),
    ],
)  # fmt: skip
def test_unreadable_documents_are_one_located_problem(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "models.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as caught:
        spec.load(path, check_files=False)
    assert [str(p).removeprefix(f"{path}:") for p in caught.value.problems] == [expected]


def test_repository_files_must_exist_and_match(
    tmp_path: Path, make_onnx: Callable[..., BuiltModel]
) -> None:
    built = make_onnx("m.onnx")
    found = problems(
        tmp_path,
        f"""\
        models:
          - name: m
            versions:
              - source: models/m.onnx
                sha256: {A}
              - source: models/missing.onnx
                sha256: {built.sha256}
        """,
        check_files=True,
    )
    assert found == [
        f"5: models[0].versions[0].sha256: does not match models/m.onnx (its sha256 is "
        f"{built.sha256})",
        f"6: models[0].versions[1].source: not found: {tmp_path}/models/missing.onnx "
        "(paths are relative to the directory of models.yaml)",
    ]


def test_the_repository_models_yaml_is_valid_as_is() -> None:
    desired = spec.load(REPO / "models.yaml", check_files=False)
    iris = desired.file.models[0]
    assert iris.production() is not None
    assert iris.production().sample_input == [[5.1, 3.5, 1.4, 0.2]]  # type: ignore[union-attr]


def test_the_published_json_schema_is_current() -> None:
    published = (REPO / "reconciler" / "models.schema.json").read_text()
    assert published == spec.json_schema(), "run `make schema` and commit the result"
    schema = json.loads(published)
    assert schema["additionalProperties"] is False
    assert "sample_input" in schema["$defs"]["VersionSpec"]["properties"]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", r'"m\n"', "2: models[0].name: 'm\\n' is not a valid model name"),
        ("sha256", f'"{A}\\n"', "5: models[0].versions[0].sha256: must be 64 lowercase hex"),
        ("alias", r'"live\n"', "6: models[0].versions[0].aliases[0]: 'live\\n' is not a valid"),
        ("tag", r'"team\n"', '7: models[0].versions[0].tags["team\\n"][key]: tag keys have no'),
        ("version", r'"3\n"', "8: models[0].versions[0].version: '3\\n' is not a version number"),
    ],
)  # fmt: skip
def test_a_trailing_newline_never_passes_a_name_pattern(
    tmp_path: Path, field: str, value: str, expected: str
) -> None:
    fields = {"name": "m", "sha256": A, "alias": "live", "tag": "team", "version": '"3"'}
    fields[field] = value
    found = problems(
        tmp_path,
        f"""\
        models:
          - name: {fields["name"]}
            versions:
              - source: s3://b/k
                sha256: {fields["sha256"]}
                aliases: [{fields["alias"]}]
                tags: {{{fields["tag"]}: x}}
                version: {fields["version"]}
        """,
    )
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize("name", ["mlgitops-apply-lock", "MLGITOPS-APPLY-LOCK", "deploy-lock"])
def test_the_apply_lock_name_is_reserved(tmp_path: Path, name: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n  - name: keep\n  - name: {name}\n")
    with pytest.raises(SpecError) as caught:
        spec.load(path, check_files=False, lock_name="deploy-lock")
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3: models[1].name: {name!r} is reserved: apply takes it as its lock and deletes "
        "it (RECONCILER_LOCK_NAME); choose another name"
    ]


def test_an_alias_bomb_is_refused_located_without_expanding_it(tmp_path: Path) -> None:
    """A billion laughs: 9**9 copies of a 10-character string from 440 bytes of YAML."""
    lines = ["models:", "  - name: m", '    tags: {a: &a "xxxxxxxxxx"}', "    bombs:"]
    previous = "a"
    for level in "bcdefghij":
        lines.append(f"      {level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
        previous = level
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(SpecError) as caught:
            spec.load(path, check_files=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:10: models[0].bombs.g[3]: aliases expand the document beyond 2097152 values "
        "and characters; write the values out or use fewer aliases"
    ]
    assert peak < 20 * 2**20, "the bomb was expanded (or read) before it was refused"


def test_a_file_of_too_many_values_is_refused_where_the_bound_is_crossed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound itself (100,000) costs seconds to reach: the rule is tested at 1,000."""
    monkeypatch.setattr(document, "MAX_NODES", 1000)
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  - name: m\n    tags: {}\n    sample:\n" + "      - 1\n" * 1000)
    with pytest.raises(SpecError) as caught:
        spec.load(path, check_files=False)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:995: models[0].sample[990]: more than 1000 values; models.yaml needs far fewer "
        "(keep large sample data out of it)"
    ]


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - name: a\n    tags: &team {team: ds, cost-center: '42'}\n"
        "  - name: b\n    tags: *team\n"
    )
    models = spec.load(path, check_files=False).file.models
    assert [m.tags for m in models] == [{"team": "ds", "cost-center": "42"}] * 2


# --- repository sources: inside the repository, a file or a directory ---------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository (it has .git) inside tmp_path; tmp_path/secret.onnx lies outside it."""
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / ".git" / "config").write_text("[http] extraheader = token\n")
    (tmp_path / "secret.onnx").write_bytes(b"outside the repository")
    return tmp_path / "repo"


def _declare(repo: Path, source: str, sha256: str = A, where: str = "models.yaml") -> Path:
    path = repo / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"models:\n  - name: m\n    versions:\n      - source: {source}\n        sha256: {sha256}\n"
    )
    return path


def _refusal(path: Path, *, check_files: bool = True) -> str:
    with pytest.raises(SpecError) as caught:
        spec.load(path, check_files=check_files)
    [problem] = caught.value.problems
    return str(problem)


@pytest.mark.parametrize("check_files", [True, False])
def test_a_source_that_leaves_the_repository_is_refused_unread(
    repo: Path, check_files: bool
) -> None:
    outside = sha256_of(repo.parent / "secret.onnx")
    path = _declare(repo, "models/../../secret.onnx", sha256=outside)
    refusal = _refusal(path, check_files=check_files)
    assert refusal == (
        f"{path}:4: models[0].versions[0].source: leaves the repository ({repo}); sources are "
        "files in it"
    )


@pytest.mark.parametrize(
    "link",
    [
        pytest.param("models/m.onnx", id="file-link"),
        pytest.param("models", id="directory-link-on-the-way"),
    ],
)
def test_a_symbolic_link_pointing_outside_is_refused_and_no_digest_is_printed(
    repo: Path, link: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outside_dir = repo.parent / "outside"
    outside_dir.mkdir()
    (outside_dir / "m.onnx").symlink_to(repo.parent / "secret.onnx")
    if link == "models":
        (repo / "models").symlink_to(outside_dir)
    else:
        (repo / "models").mkdir()
        (repo / link).symlink_to(repo.parent / "secret.onnx")
    path = _declare(repo, "models/m.onnx")
    assert _refusal(path) == (
        f"{path}:4: models[0].versions[0].source: a symbolic link on the way resolves outside "
        f"the repository ({repo}); copy the file into the repository"
    )
    assert main(["validate", "-f", str(path)]) == 1
    out, err = capsys.readouterr()
    assert sha256_of(repo.parent / "secret.onnx") not in out + err
    assert "models[0].versions[0].source: a symbolic link on the way resolves outside" in err


@pytest.mark.parametrize("source", [".git/config", ".GIT/config"])
def test_git_files_are_never_a_source(repo: Path, source: str) -> None:
    (repo / ".GIT").mkdir()  # what .git is on a case-insensitive file system
    (repo / ".GIT" / "config").write_text("[http] extraheader = token\n")
    path = _declare(repo, source)
    assert _refusal(path).endswith("source: inside .git: git's own files are never a model")


def test_a_models_yaml_linked_from_elsewhere_is_refused_unread(repo: Path) -> None:
    """A pull request's models.yaml -> /etc/shadow had each account's line quoted as an
    unknown field in the plan (a tester's)."""
    elsewhere = repo.parent / "elsewhere"
    built = write_mlp(elsewhere / "m.onnx")
    target = _declare(elsewhere, "../elsewhere/m.onnx", sha256=built.sha256)
    assert spec.load(target).local_path("../elsewhere/m.onnx") == built.path
    (repo / "models.yaml").symlink_to(target)
    assert _refusal(repo / "models.yaml").endswith(
        "a symbolic link to a file outside the repository: models.yaml is a file of the repository"
    )
    secret = repo.parent / "shadow"
    secret.write_text("root:$6$secret-hash:20228:0:99999:7:::\n")
    (repo / "other.yaml").symlink_to(secret)
    assert "secret-hash" not in _refusal(repo / "other.yaml")
    (repo / "inside.yaml").symlink_to(repo / "models.yaml")  # a link within is followed
    assert _refusal(repo / "inside.yaml").endswith("outside the repository: models.yaml is a "
                                                   "file of the repository")  # fmt: skip


def test_a_models_yaml_that_is_a_fifo_is_refused_without_blocking(repo: Path) -> None:
    os.mkfifo(repo / "models.yaml")  # reading it would block for ever
    assert _refusal(repo / "models.yaml").endswith("not a regular file: models.yaml is text")


def test_the_whole_repository_is_not_a_directory_source(repo: Path) -> None:
    """Its .git was listed and hashed with the model (`source: .`, or `examples/..`)."""
    for source in (".", "models/.."):
        path = _declare(repo, source)
        assert _refusal(path).endswith("the whole repository: give the folder of the model's files")


def test_a_special_file_is_refused_without_reading_it(repo: Path) -> None:
    os.mkfifo(repo / "pipe.onnx")  # reading it would block for ever
    path = _declare(repo, "pipe.onnx")
    assert _refusal(path).endswith("source: neither a regular file nor a directory")


def test_a_models_yaml_below_the_root_may_name_files_elsewhere_in_the_repository(
    repo: Path,
) -> None:
    built = write_mlp(repo / "models" / "m.onnx")
    path = _declare(repo, "../models/m.onnx", sha256=built.sha256, where="deploy/models.yaml")
    desired = spec.load(path)
    assert desired.local_path("../models/m.onnx") == built.path


def _external_data_model(directory: Path) -> Path:
    """model.onnx + model.onnx.data, as torch.onnx and onnx write weights as external data."""
    directory.mkdir(parents=True)
    onnx.save_model(
        mlp_model(),
        directory / "model.onnx",
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return directory


def test_a_directory_source_is_identified_by_every_file_in_it(repo: Path) -> None:
    directory = _external_data_model(repo / "models" / "torch")
    expected = identity(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["model.onnx", "model.onnx.data"]
    desired = spec.load(_declare(repo, "models/torch", sha256=expected))
    assert desired.local_path("models/torch") == directory
    (directory / "model.onnx.data").write_bytes(b"tampered weights")
    path = _declare(repo, "models/torch", sha256=expected)
    assert _refusal(path) == (
        f"{path}:5: models[0].versions[0].sha256: does not match models/torch (its sha256 is "
        f"{identity(directory)})"
    )


@pytest.mark.parametrize(
    ("arrange", "detail"),
    [
        pytest.param(
            lambda d: (d / "extra").symlink_to(d.parent.parent.parent / "secret.onnx"),
            "is not a regular file (symbolic links are refused)",
            id="symlink-inside",
        ),
        pytest.param(
            lambda d: (d / "model.onnx").rename(d / "weights.bin"),
            "a directory source holds model.onnx (or exactly one .onnx file) at its top; no "
            ".onnx file there",
            id="no-onnx",
        ),
    ],
)
def test_a_directory_source_that_cannot_be_identified_is_located(
    repo: Path, arrange: Callable[[Path], object], detail: str
) -> None:
    directory = _external_data_model(repo / "models" / "torch")
    arrange(directory)
    assert _refusal(_declare(repo, "models/torch")).endswith(detail)


# --- sample_input: rows for one input, or input name -> rows ------------------------------------


def _with_sample(tmp_path: Path, sample: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - name: m\n    versions:\n      - source: s3://b/k\n"
        f"        sha256: {A}\n        sample_input: {sample}\n"
    )
    return path


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("[[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]", [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]),
        ('["good movie", "bad plot"]', ["good movie", "bad plot"]),
        ("[[true, false]]", [[True, False]]),
        ('{city: [["Paris"]], size: [[3.5, 2]]}', {"city": [["Paris"]], "size": [[3.5, 2]]}),
        ('{"text": ["01"]}', {"text": ["01"]}),
    ],
)
def test_sample_input_takes_rows_or_inputs_by_name(
    tmp_path: Path, sample: str, expected: object
) -> None:
    [version] = spec.load(_with_sample(tmp_path, sample), check_files=False).file.models[0].versions
    assert version.sample_input == expected


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("[[1, 2], [3]]", "rows[1] is shaped [1], rows[0] [2]: rows are alike"),
        ('[[1, "a"]]', "rows mixes number and string: one kind of value per input"),
        ("[[1, null]]", "rows[0][1]: null is not a value (numbers, strings or booleans)"),
        ("[{a: 1}]", "rows[0]: dict is not a value (numbers, strings or booleans)"),
        ("[]", "rows: an empty list (give at least one row)"),
        ("{x: 3}", "input 'x' must be a list of rows"),
        ("{x: [[1]], y: [[true, 2]]}", "input 'y' mixes boolean and number: one kind of value"),
        ("{}", "an empty mapping: give {input name: rows} for at least one input"),
        ("hello", "a list of rows (one input) or a mapping of input name to rows"),
    ],
)
def test_a_sample_input_numpy_cannot_take_is_located(
    tmp_path: Path, sample: str, message: str
) -> None:
    path = _with_sample(tmp_path, sample)
    problem = _refusal(path, check_files=False)
    assert problem.startswith(f"{path}:6: models[0].versions[0].sample_input: {message}")


def test_local_path_checks_again_when_apply_asks(repo: Path) -> None:
    """A link swapped in after validate (a race in CI) is refused when apply reads the source."""
    built = write_mlp(repo / "models" / "m.onnx")
    desired = spec.load(_declare(repo, "models/m.onnx", sha256=built.sha256))
    built.path.unlink()
    built.path.symlink_to(repo.parent / "secret.onnx")
    with pytest.raises(SourceError, match="resolves outside the repository"):
        desired.local_path("models/m.onnx")


@pytest.mark.parametrize(
    ("evaluation_file", "detail"),
    [
        ("../secret.onnx", "leaves the repository"),
        (".git/config", "inside .git: git's own files are never a model"),
        ("s3://b/rows.csv", "give a path in this repository, not a URI"),
        ("missing.csv", "not a file: "),
    ],
)
def test_the_evaluation_file_is_a_repository_file_like_a_source(
    repo: Path, evaluation_file: str, detail: str
) -> None:
    path = repo / "models.yaml"
    path.write_text(f"models:\n  - name: m\n    evaluation_file: {evaluation_file}\n")
    refusal = _refusal(path)
    assert refusal.startswith(f"{path}:3: models[0].evaluation_file: {detail}")


_YAMLISH = st.sampled_from(
    [
        *"am: -[]{},&*!|>'\"#?\n\t%@`\\09.",
        *("models:", "name:", "versions:", "- ", "&a ", "*a", "<<: ", "!!binary ", "---\n"),
        *("? ", "sha256: ", "source: ", "sample_input: ", "\ufeff", "\x85", "\u2028"),
        "%YAML 1.1\n",
    ]
)


def _outcome(path: Path) -> tuple[str, ...]:
    """How spec.load ends: ("valid",) or each problem's file; any other exception escapes."""
    try:
        spec.load(path, check_files=False)
    except SpecError as exc:
        return tuple(problem.file for problem in exc.problems if problem.line >= 0)
    return ("valid",)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.lists(_YAMLISH, max_size=40).map("".join))
# Found by fuzzing: ruamel raised TypeError (a mapping as a key), KeyError and TypeError in
# line_of (a tagged key, a key a merge brought in).
@example(text="?\x85models:\x85models:")
@example(text=" <<: &a!ab \u2028versions:>0-*a\u20285a|source:  m")
@example(text="6*a!!binary '<<:  ---\n<<: \x85? :c]8]c- '!")
def test_any_text_is_a_models_file_or_located_problems(tmp_path: Path, text: str) -> None:
    """Whatever the file holds: a Desired, or SpecError naming the file; never another error."""
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    outcome = _outcome(path)
    assert outcome == ("valid",) or (outcome and set(outcome) == {str(path)})
