"""models.yaml -> pydantic: the desired registry, with every problem located by file:line:field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.registry import APPLY_LOCK_MODEL, TAG_PREFIX, Stage
from reconciler import sources
from reconciler.document import field_path, line_of, read
from reconciler.errors import Problem, SourceError, SpecError
from reconciler.sources import is_uri

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,254}$"
RESERVED_ALIAS = re.compile(r"latest|[vV]\d+")
SHA256_PATTERN = r"^[0-9a-f]{64}$"
TAG_KEY_PATTERN = rf"^(?!{re.escape(TAG_PREFIX)})(?!mlflow\.)[^\s]{{1,250}}$"
VERSION_PATTERN = r"^[1-9][0-9]*$"

Loc = tuple[str | int, ...]

SampleInput = list[Any] | dict[str, list[Any]]
"""Rows for a model with one input, or input name -> rows; see ``_sample_input``."""


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, coerce_numbers_to_str=True, regex_engine="python-re"
    )


def _whole(pattern: str) -> AfterValidator:
    """The whole value must match (``re.fullmatch``): ``$`` alone lets a trailing newline pass.

    The pattern also stays in StringConstraints for the JSON Schema (where ``$`` is the end).
    """
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "String should match pattern '{pattern}'",
                {"pattern": pattern},
            )
        return value

    return AfterValidator(check)


ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN), _whole(NAME_PATTERN)]
AliasName = Annotated[str, StringConstraints(pattern=ALIAS_PATTERN), _whole(ALIAS_PATTERN)]
TagKey = Annotated[str, StringConstraints(pattern=TAG_KEY_PATTERN), _whole(TAG_KEY_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN), _whole(SHA256_PATTERN)]
VersionNumber = Annotated[str, StringConstraints(pattern=VERSION_PATTERN), _whole(VERSION_PATTERN)]
Tags = dict[TagKey, str]


def _kind(value: Any) -> str | None:
    """A sample value's kind: boolean, number or string; None for anything else."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


def _shape(node: Any, at: str, kinds: set[str]) -> tuple[int, ...]:
    """The shape of nested rows (every row alike); the kinds of their values go to ``kinds``."""
    if not isinstance(node, list):
        kind = _kind(node)
        if kind is None:
            shown = "null" if node is None else type(node).__name__
            raise ValueError(f"{at}: {shown} is not a value (numbers, strings or booleans)")
        kinds.add(kind)
        return ()
    if not node:
        raise ValueError(f"{at}: an empty list (give at least one row)")
    shapes = [_shape(item, f"{at}[{i}]", kinds) for i, item in enumerate(node)]
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(
                f"{at}[{i}] is shaped {list(shape)}, {at}[0] {list(shapes[0])}: rows are alike"
            )
    return (len(node), *shapes[0])


def _rows(rows: Any, at: str) -> list[Any]:
    if not isinstance(rows, list):
        raise ValueError(f"{at} must be a list of rows")
    kinds: set[str] = set()
    _shape(rows, at, kinds)
    if len(kinds) > 1:
        raise ValueError(f"{at} mixes {' and '.join(sorted(kinds))}: one kind of value per input")
    return rows


def _sample_input(value: Any) -> SampleInput:
    """Rows (one input), or input name -> rows: numbers, strings or booleans, nested alike."""
    if isinstance(value, dict):
        if not value:
            raise ValueError("an empty mapping: give {input name: rows} for at least one input")
        return {str(name): _rows(rows, f"input {name!r}") for name, rows in value.items()}
    if isinstance(value, list):
        return _rows(value, "rows")
    raise ValueError("a list of rows (one input) or a mapping of input name to rows")


_ROWS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {"anyOf": [{"type": ["number", "string", "boolean"]}, {"type": "array"}]},
}
CheckedSampleInput = Annotated[
    SampleInput,
    PlainValidator(_sample_input),
    WithJsonSchema(
        {
            "anyOf": [
                _ROWS_SCHEMA,
                {"type": "object", "minProperties": 1, "additionalProperties": _ROWS_SCHEMA},
            ]
        }
    ),
]


class VersionSpec(_Strict):
    """One model version; its identity is ``contracts.digest.identity`` of its source."""

    source: str = Field(
        min_length=1,
        description="A file or directory of this repository, relative to this file (uploaded by "
        "the reconciler as a run artifact; a directory holds the ONNX file and its external "
        "data), or an s3://, runs:/, models:/ or mlflow-artifacts: URI.",
    )
    sha256: Sha256 = Field(
        description="The version's identity: the hex sha256 of the ONNX file, or for a "
        "directory the sha256 of its `sha256sum` listing (every file, sorted by path)."
    )
    stage: Stage = Field(default=Stage.NONE, description="MLflow stage (default None).")
    aliases: list[AliasName] = Field(
        default_factory=list, description="Aliases naming this version."
    )
    tags: Tags = Field(default_factory=dict, description="Model version tags.")
    description: str | None = Field(default=None, description="Version description.")
    version: VersionNumber | None = Field(
        default=None,
        description="Adopt this existing MLflow version (registered outside the reconciler, "
        "so unmanaged) instead of registering a new one: apply checks its sha256, then tags it.",
    )
    sample_input: CheckedSampleInput | None = Field(
        default=None,
        description="Input for the promotion gate's inference: a list of rows (a model with "
        "one input, or its first input), or {input name: rows} for several inputs. Rows are "
        "numbers, strings or booleans (one kind per input), nested alike. Default: zeros, "
        '"" or false shaped by the model\'s inputs.',
    )
    breaking_change_acknowledged: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Why clients are ready for this version's breaking signature change (an "
        "input or output removed or renamed, a type, rank or fixed dimension changed, a new "
        "required input) against the version served now. Without it, apply refuses to make "
        "this version Production or move an alias to it when its signature breaks clients, "
        "and the servers keep serving the old one. Stored on the version as the tag "
        "mlgitops.breaking-change-acknowledged, which the servers read.",
    )


class BehaviourLimits(_Strict):
    """How far a version that becomes served may answer differently from the served one, on
    its ``sample_input``. Past a limit, apply refuses with the figures."""

    max_differing_rows: int | None = Field(
        default=None, ge=0, description="Rows of sample_input whose predictions may differ."
    )
    max_abs_difference: float | None = Field(
        default=None, ge=0, description="Largest absolute difference of a numeric output."
    )


class RolloutSpec(_Strict):
    """Progressive delivery: a candidate beside Production (canary share or shadow copy)."""

    stage: Literal["Staging"] | None = Field(
        default=None, description="Candidate: the version declared with this stage."
    )
    alias: AliasName | None = Field(
        default=None, description="Candidate: the version with this alias."
    )
    mode: Literal["canary", "shadow"] = "canary"
    weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Canary: percent of traffic to the candidate (0 ends the canary). "
        "Shadow: percent of requests copied to it (default 100).",
    )

    @model_validator(mode="after")
    def _one_selector(self) -> RolloutSpec:
        if (self.stage is None) == (self.alias is None):
            raise ValueError("give exactly one of 'stage: Staging' or 'alias: NAME'")
        if self.mode == "canary" and self.weight is None:
            raise ValueError("canary needs 'weight' (0 to 100)")
        return self

    def effective_weight(self) -> int:
        return self.weight if self.weight is not None else 100


SHADOW_STEP = "shadow"


def _rollout_step(value: Any) -> int | str:
    """A canary share in percent (an integer from 1 to 100) or ``shadow``."""
    if value == SHADOW_STEP:
        return SHADOW_STEP
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100:
        return value
    raise ValueError(
        f"{value!r} is not a step: give a canary share in percent (an integer from 1 to 100) "
        f"or {SHADOW_STEP!r}"
    )


RolloutStep = Annotated[
    int | str,
    PlainValidator(_rollout_step),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"const": SHADOW_STEP}]}
    ),
]
"""A canary share (the candidate answers this percent of requests) or a shadow step."""


class ProgressiveSpec(_Strict):
    """A new Production version reaches Production step by step, promoted or rolled back by
    ``promote`` from the servers' metrics. Limits are checked once a step's candidate has
    ``min_requests``; a breach sends every request back to the stable version at once."""

    steps: list[RolloutStep] = Field(
        min_length=1,
        max_length=20,
        description="In order: a canary share in percent (1 to 100) or `shadow` (the candidate "
        "runs on a copy of every request, its answer is compared, never returned). After the "
        "last step the candidate becomes Production.",
    )
    pause_seconds: float = Field(
        default=300, gt=0, le=86_400, description="How long each step lasts at least."
    )
    min_requests: int = Field(
        default=100,
        ge=1,
        description="Requests the candidate answers (shadow: comparisons) in a step before its "
        "limits are judged and before the step may end.",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest share of the candidate's answers that may be 5xx (shadow steps: "
        "of its runs that may fail).",
    )
    max_p99_latency_ratio: float | None = Field(
        default=None,
        gt=0,
        description="Largest candidate p99 latency over the stable version's in the same step "
        "(from the servers' histogram buckets); judged when both have min_requests answers, "
        "and 100 at least: a step does not end before. Canary steps below 100 % only (a "
        "shadow run's time is inference alone).",
    )
    max_disagreement: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Shadow steps: largest share of compared answers that differ from the "
        "stable version's.",
    )
    max_rejection_increase: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Canary steps: how much larger the candidate's share of 4xx answers may be "
        "than the stable version's in the same step. The server answers 400 when onnxruntime "
        "refuses an argument (e.g. an index a Gather table does not hold), so a candidate "
        "that rejects inputs the stable version takes shows here, not in max_error_rate.",
    )


class ModelSpec(_Strict):
    """One registered model."""

    name: ModelName
    description: str | None = Field(
        default=None, description="Registered-model description (absent: left as it is)."
    )
    tags: Tags = Field(default_factory=dict, description="Registered-model tags.")
    prune: bool = Field(
        default=False,
        description="Archive managed versions that are no longer listed (never deletes).",
    )
    versions: list[VersionSpec] = Field(default_factory=list)
    rollout: RolloutSpec | None = None
    progressive: ProgressiveSpec | None = Field(
        default=None,
        description="Roll a new Production version out step by step (canary shares, shadow), "
        "judged on the servers' metrics; `promote` advances, promotes or rolls it back.",
    )
    behaviour_limits: BehaviourLimits | None = Field(
        default=None,
        description="Limits on how the version that becomes Production (or an alias's) may "
        "differ from the served one on its sample_input and evaluation_file; the plan shows "
        "the figures.",
    )
    evaluation_file: str | None = Field(
        default=None,
        min_length=1,
        description="Rows in this repository (path relative to this file; .jsonl, .csv or "
        ".npy) both the served and the new version run on: the plan shows how many "
        "predictions differ and by how much.",
    )

    def production(self) -> VersionSpec | None:
        return next((v for v in self.versions if v.stage is Stage.PRODUCTION), None)

    def rollout_candidate(self) -> VersionSpec | None:
        """The version the rollout section selects, if any."""
        if self.rollout is None:
            return None
        if self.rollout.alias is not None:
            return next((v for v in self.versions if self.rollout.alias in v.aliases), None)
        return next((v for v in self.versions if v.stage is Stage.STAGING), None)


class ModelsFile(_Strict):
    """models.yaml: the desired MLflow Model Registry."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        coerce_numbers_to_str=True,
        regex_engine="python-re",
        title="mlgitops models.yaml",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    models: list[ModelSpec] = Field(default_factory=list)


class _PartialFile(ModelsFile):
    """Models that are valid on their own; None where one is not (indices kept)."""

    models: list[ModelSpec | None] = Field(default_factory=list)  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Desired:
    """A validated models.yaml and where it lives (sources are relative to its directory)."""

    path: Path
    file: ModelsFile

    def local_path(self, source: str) -> Path | None:
        """The repository file or directory a path source names, resolved; None for a URI.

        Always inside the repository (symbolic links followed) and outside ``.git``: see
        ``reconciler.sources``. Its identity is ``contracts.digest.identity(path)``.

        Raises:
            SourceError: the source leaves the repository (checked again at every call).
        """
        if is_uri(source):
            return None
        return sources.resolve(self.path, source)


def json_schema() -> str:
    """The JSON Schema of models.yaml, as kept in reconciler/models.schema.json."""
    return json.dumps(ModelsFile.model_json_schema(), indent=2, sort_keys=False) + "\n"


# --- loading -------------------------------------------------------------------------------


def load(path: Path, *, check_files: bool = True, lock_name: str = APPLY_LOCK_MODEL) -> Desired:
    """Read and validate models.yaml; raise SpecError listing every problem found.

    Args:
        path: the models.yaml file.
        check_files: also check that repository-path sources exist and match their sha256.
        lock_name: the registered model apply uses as its lock (RECONCILER_LOCK_NAME): reserved.
    """
    name = str(path)
    document = read(path)
    if document is None:
        document = {}
    plain = _plain(document)
    try:
        models_file = ModelsFile.model_validate(plain)
    except ValidationError as exc:
        problems = [
            Problem(name, line_of(document, err["loc"]), field_path(err["loc"]), _message(err))
            for err in exc.errors()
        ]
        # The rules across fields still run on every model that is valid on its own.
        partial = Desired(path, _PartialFile.model_construct(models=_valid_models(plain)))
        problems += [
            Problem(name, line_of(document, loc), field_path(loc), message)
            for loc, message in rule_problems(partial, check_files=check_files, lock_name=lock_name)
        ]
        raise SpecError(sorted(problems, key=lambda problem: problem.line)) from None
    desired = Desired(path=path, file=models_file)
    located = [
        Problem(name, line_of(document, loc), field_path(loc), message)
        for loc, message in rule_problems(desired, check_files=check_files, lock_name=lock_name)
    ]
    if located:
        raise SpecError(sorted(located, key=lambda problem: problem.line))
    return desired


def _valid_models(plain: Any) -> list[ModelSpec | None]:
    """Each raw model validated on its own; None where it is invalid (keeps indices)."""
    raw = plain.get("models") if isinstance(plain, dict) else None
    if not isinstance(raw, list):
        return []
    valid: list[ModelSpec | None] = []
    for item in raw:
        try:
            valid.append(ModelSpec.model_validate(item))
        except ValidationError:
            valid.append(None)
    return valid


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    if not error["loc"] and error["type"] == "model_type":
        return "the file must be a mapping with a `models:` list"
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if error["loc"] and error["loc"][-1] == "breaking_change_acknowledged":
        return "give the reason clients are ready, as text (it is shown in the plan)"
    if error["type"] == "string_pattern_mismatch":
        loc = [part for part in error["loc"] if isinstance(part, str)]
        if loc[-1] == "sha256":
            return (
                "must be 64 lowercase hex digits (the version's identity: add-version computes it)"
            )
        if loc[-1] in ("aliases", "alias"):
            return (
                f"{error['input']!r} is not a valid alias: a letter or _, then letters, digits, "
                "_ or -"
            )
        if loc[-1] == "name":
            return f"{error['input']!r} is not a valid model name: letters, digits, . _ -"
        if loc[-1] == "version":
            return f"{error['input']!r} is not a version number (1, 2, ...)"
        if "tags" in loc:
            return "tag keys have no spaces; mlgitops.* and mlflow.* are reserved"
    return message.removeprefix("Value error, ")


def _plain(node: Any) -> Any:
    """ruamel's commented containers and scalars -> plain Python values."""
    if isinstance(node, Mapping):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(item) for item in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return str(node)


# --- rules across fields ----------------------------------------------------------------------


def rule_problems(
    desired: Desired, *, check_files: bool, lock_name: str = APPLY_LOCK_MODEL
) -> Iterator[tuple[Loc, str]]:
    """The rules pydantic's per-field checks cannot express, each with its location."""
    seen_names: dict[str, int] = {}
    models: list[ModelSpec | None] = list(desired.file.models)
    for m, model in enumerate(models):
        if model is None:
            continue  # invalid on its own: pydantic reported it
        if model.name.casefold() in {lock_name.casefold(), APPLY_LOCK_MODEL.casefold()}:
            yield (
                ("models", m, "name"),
                f"{model.name!r} is reserved: apply takes it as its lock and deletes it "
                "(RECONCILER_LOCK_NAME); choose another name",
            )
        if model.name in seen_names:
            yield (
                ("models", m, "name"),
                f"model {model.name!r} is declared twice "
                f"(first at models[{seen_names[model.name]}])",
            )
        seen_names.setdefault(model.name, m)
        yield from _model_rules(desired, m, model, check_files=check_files)


def _model_rules(
    desired: Desired, m: int, model: ModelSpec, *, check_files: bool
) -> Iterator[tuple[Loc, str]]:
    base: Loc = ("models", m)
    production: int | None = None
    aliases: dict[str, int] = {}
    digests: dict[str, int] = {}
    adopted: dict[str, int] = {}
    for v, version in enumerate(model.versions):
        here: Loc = (*base, "versions", v)
        if version.stage is Stage.PRODUCTION:
            if production is not None:
                yield (
                    (*here, "stage"),
                    f"a second Production version (versions[{production}] is Production); "
                    "at most one per model",
                )
            else:
                production = v
        for a, alias in enumerate(version.aliases):
            if RESERVED_ALIAS.fullmatch(alias):
                yield (
                    (*here, "aliases", a),
                    f"{alias!r} is reserved by MLflow (latest, v<number>); choose another alias",
                )
            if alias in aliases:
                yield (
                    (*here, "aliases", a),
                    f"alias {alias!r} already names versions[{aliases[alias]}]; "
                    "an alias names one version",
                )
            aliases.setdefault(alias, v)
        if version.sha256 in digests:
            yield (
                (*here, "sha256"),
                f"same sha256 as versions[{digests[version.sha256]}]; sha256 is unique per model",
            )
        digests.setdefault(version.sha256, v)
        if version.version is not None:
            if version.version in adopted:
                yield (
                    (*here, "version"),
                    f"version {version.version} is adopted by versions[{adopted[version.version]}]"
                    " already",
                )
            adopted.setdefault(version.version, v)
        yield from _source_rules(desired, version, here, check_files=check_files)
    yield from _rollout_rules(model, base)
    yield from _progressive_rules(model, base)
    if model.evaluation_file is not None:
        yield from _evaluation_rules(desired, model.evaluation_file, base, check_files=check_files)


def _evaluation_rules(
    desired: Desired, evaluation_file: str, base: Loc, *, check_files: bool
) -> Iterator[tuple[Loc, str]]:
    """The evaluation file is a repository file like a source (inside, never read here)."""
    here: Loc = (*base, "evaluation_file")
    if is_uri(evaluation_file):
        yield (here, "give a path in this repository, not a URI")
        return
    try:
        path = sources.resolve(desired.path, evaluation_file)
    except SourceError as exc:
        yield (here, exc.detail)
        return
    if check_files and not path.is_file():
        yield (here, f"not a file: {path} (paths are relative to the directory of models.yaml)")


def _source_rules(
    desired: Desired, version: VersionSpec, here: Loc, *, check_files: bool
) -> Iterator[tuple[Loc, str]]:
    source = version.source
    if is_uri(source):
        return
    try:
        if not check_files:
            sources.resolve(desired.path, source)
            return
        _, actual = sources.identify(desired.path, source)
    except SourceError as exc:
        yield ((*here, "source"), exc.detail)
        return
    if actual != version.sha256:
        yield ((*here, "sha256"), f"does not match {source} (its sha256 is {actual})")


def _progressive_rules(model: ModelSpec, base: Loc) -> Iterator[tuple[Loc, str]]:
    progressive = model.progressive
    if progressive is None:
        return
    here: Loc = (*base, "progressive")
    if model.rollout is not None:
        yield (
            here,
            "a progressive rollout moves traffic itself: remove the manual `rollout:` section "
            "of this model (or this section)",
        )
    if progressive.max_disagreement is not None and SHADOW_STEP not in progressive.steps:
        yield (
            (*here, "max_disagreement"),
            "applies to shadow steps, and `steps` has none: add a `shadow` step or remove it",
        )


def _rollout_rules(model: ModelSpec, base: Loc) -> Iterator[tuple[Loc, str]]:
    rollout = model.rollout
    if rollout is None:
        return
    here: Loc = (*base, "rollout")
    if model.production() is None:
        yield (here, "a rollout needs a Production version beside the candidate")
    if rollout.stage is not None:
        staging = [v for v in model.versions if v.stage is Stage.STAGING]
        if len(staging) != 1:
            yield (
                (*here, "stage"),
                f"the candidate is the Staging version, but {len(staging)} versions are Staging "
                "(need exactly one)",
            )
            return
    elif rollout.alias is not None and model.rollout_candidate() is None:
        yield ((*here, "alias"), f"no version of {model.name!r} has alias {rollout.alias!r}")
        return
    candidate = model.rollout_candidate()
    if candidate is not None and candidate.stage is Stage.PRODUCTION:
        yield (here, "the candidate is the Production version itself; choose another version")
