"""Which versions become what serving follows, and their signatures against the served ones (pure).

Serving follows the Production stage or an alias (the sidecar's ``--stage``/``--alias``). A
version that becomes Production, or that an alias moves to, is reviewed against the version
Production or that alias names now. The signatures come in as data (``reconciler.probe`` reads
them); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from contracts.registry import ROLLOUT_TAG, Stage
from contracts.rollout import Rollout, RolloutContractError, RolloutMode
from reconciler.behaviour import BehaviourDiff
from reconciler.errors import BehaviourLimitError, BreakingChangeError
from reconciler.signature import Signature, TensorDiff, Verdict, compare, listing
from reconciler.spec import BehaviourLimits, ModelsFile, ModelSpec, SampleInput, VersionSpec
from reconciler.state import ActualModel, ActualVersion, RegistryState

ACKNOWLEDGE_FIELD = "breaking_change_acknowledged"
"""The version field of models.yaml that lets a breaking change through."""

REFUSED_VERDICT = (
    "BREAKING: apply refuses it; if clients are ready, set",
    f"{ACKNOWLEDGE_FIELD}: <reason>",
    "on this version in models.yaml",
)
"""The verdict on a breaking change not acknowledged: prose, the field to set (code), prose."""

SignatureKey = tuple[str, str]
"""(model, ``sha256:<hex>`` or ``v<number>``): how a version's signature is looked up."""

Signatures = Mapping[SignatureKey, Signature | str]
"""The signatures read, or why one could not be read."""

SAMPLE_ROWS = "sample_input"
"""Where rows come from: the becoming version's sample_input, or the model's evaluation file."""

BehaviourKey = tuple[SignatureKey, SignatureKey, str]
"""(served, becoming, where the rows come from)."""

Behaviours = Mapping[BehaviourKey, BehaviourDiff | str]
"""Both versions' predictions compared on one set of rows, or why they could not be."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the becoming version answers differently from the served one on one set of rows."""

    rows_from: str
    """``sample_input``, or the evaluation file's path in the repository."""
    diff: BehaviourDiff | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_from": self.rows_from,
            "problem": self.problem,
            **(self.diff.to_dict() if self.diff is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """What reconciler.probe read for a plan: signatures and behaviour on sample inputs."""

    signatures: Signatures
    behaviours: Behaviours = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VersionRef:
    """A version by MLflow number (None while not registered) and sha256 (None if unmanaged)."""

    model: str
    version: str | None
    sha256: str | None
    source: str
    """Where to read it while it is not registered (models.yaml's source)."""

    @property
    def key(self) -> SignatureKey:
        return (self.model, f"sha256:{self.sha256}" if self.sha256 else f"v{self.version}")

    def label(self) -> str:
        if self.version is not None:
            return f"v{self.version}"
        return f"new {(self.sha256 or '')[:12]}"


@dataclass(frozen=True, slots=True)
class ServingMove:
    """``becoming`` takes over what ``follows`` names (from ``served``, or from nothing)."""

    model: str
    follows: str
    """``stage Production`` or ``alias <name>``."""
    served: VersionRef | None
    becoming: VersionRef
    acknowledged: str | None = None
    """models.yaml's reason for letting a breaking change through, if it gives one."""
    sample: SampleInput | None = None
    """The becoming version's sample_input: both versions' predictions on it are compared."""
    limits: BehaviourLimits | None = None
    evaluation_file: str | None = None
    """The model's evaluation file: both versions' predictions on its rows are compared too."""

    def behaviour_keys(self) -> tuple[BehaviourKey, ...]:
        """One per set of rows both versions run on (none when nothing is served yet)."""
        if self.served is None:
            return ()
        sources = [SAMPLE_ROWS] if self.sample is not None else []
        if self.evaluation_file is not None:
            sources.append(self.evaluation_file)
        return tuple((self.served.key, self.becoming.key, rows) for rows in sources)


@dataclass(frozen=True, slots=True)
class SignatureReview:
    """The signature of a move's version against the served one, tensor by tensor."""

    move: ServingMove
    diffs: tuple[TensorDiff, ...] = ()
    problem: str | None = None
    """Why the signatures could not be compared (then nothing is judged breaking)."""
    compared: bool = field(default=False)
    """True when there was a served signature to compare against."""
    behaviours: tuple[Behaviour, ...] = ()

    @property
    def limit_breaches(self) -> tuple[str, ...]:
        """Each behaviour limit of models.yaml the figures pass, with both figures."""
        limits = self.move.limits
        if limits is None:
            return ()
        breaches = []
        for behaviour in self.behaviours:
            found = behaviour.diff
            if found is None:
                continue
            if limits.max_differing_rows is not None and (
                found.differing_rows > limits.max_differing_rows
            ):
                breaches.append(
                    f"on {behaviour.rows_from} {found.differing_rows} of {found.rows} row(s) "
                    f"differ, max_differing_rows is {limits.max_differing_rows}"
                )
            largest = found.max_abs_difference
            if limits.max_abs_difference is not None and (
                largest is not None and largest > limits.max_abs_difference
            ):
                breaches.append(
                    f"on {behaviour.rows_from} the largest difference is {largest:.6g}, "
                    f"max_abs_difference is {limits.max_abs_difference:g}"
                )
        return tuple(breaches)

    @property
    def breaking(self) -> tuple[TensorDiff, ...]:
        return tuple(diff for diff in self.diffs if diff.verdict is Verdict.BREAKING)

    @property
    def refused_breaking(self) -> bool:
        """A breaking change models.yaml does not acknowledge."""
        return bool(self.breaking) and self.move.acknowledged is None

    @property
    def refused(self) -> bool:
        """Apply does not make this move: a breaking change not acknowledged, or past a limit."""
        return self.refused_breaking or bool(self.limit_breaches)

    def behaviour_lines(self) -> list[str]:
        """``behaviour on sample_input: 1 of 3 row(s) differ, ...``, one per set of rows, then
        the limits passed."""
        lines = [
            f"behaviour on {b.rows_from}: "
            + (b.diff.summary() if b.diff is not None else f"not compared ({b.problem})")
            for b in self.behaviours
        ]
        if self.limit_breaches:
            lines.append("PAST A LIMIT: " + "; ".join(self.limit_breaches) + " (apply refuses it)")
        return lines

    def transition(self) -> str:
        """``stage Production: v1 -> v2``."""
        move = self.move
        served = move.served.label() if move.served is not None else "nothing served"
        return f"{move.follows}: {served} -> {move.becoming.label()}"

    def headline(self) -> str:
        """``m stage Production: v1 -> v2: 1 breaking, 1 compatible change(s)``."""
        text = f"{self.move.model} {self.transition()}"
        if self.problem is not None:
            return f"{text}: not compared ({self.problem})"
        if not self.compared:
            return f"{text}: first version served"
        breaking = len(self.breaking)
        compatible = sum(1 for diff in self.diffs if diff.verdict is Verdict.COMPATIBLE)
        if not breaking and not compatible:
            return f"{text}: same signature"
        return f"{text}: {breaking} breaking, {compatible} compatible change(s)"

    def verdict_line(self) -> str:
        """What apply does about it, for people."""
        if not self.breaking:
            return "no breaking change"
        if self.move.acknowledged is not None:
            return f"BREAKING, acknowledged in models.yaml: {self.move.acknowledged}"
        before, code, after = REFUSED_VERDICT
        return f"{before} `{code}` {after}"

    def to_dict(self) -> dict[str, Any]:
        move = self.move
        return {
            "model": move.model,
            "follows": move.follows,
            "served_version": move.served.version if move.served is not None else None,
            "version": move.becoming.version,
            "sha256": move.becoming.sha256,
            "compared": self.compared,
            "problem": self.problem,
            "breaking": bool(self.breaking),
            "acknowledged": move.acknowledged,
            "refused": self.refused,
            "tensors": [diff.to_dict() for diff in self.diffs],
            "behaviour": [behaviour.to_dict() for behaviour in self.behaviours],
            "limit_breaches": list(self.limit_breaches),
        }


# --- which versions become served -----------------------------------------------------------


def _ref(model: str, version: ActualVersion) -> VersionRef:
    return VersionRef(model, version.version, version.sha256, version.source)


def _becoming(model: str, spec: VersionSpec, actual: ActualModel) -> VersionRef:
    found = actual.by_sha256().get(spec.sha256)
    number = found.version if found is not None else spec.version
    return VersionRef(model, number, spec.sha256, spec.source)


def _canary_now(actual: ActualModel) -> str | None:
    """The version a canary sends clients to now (per the rollout tag), if any."""
    text = actual.tags.get(ROLLOUT_TAG)
    if text is None:
        return None
    try:
        rollout = Rollout.parse(text)
    except RolloutContractError:
        return None
    if rollout.mode is not RolloutMode.CANARY or rollout.weight == 0:
        return None
    return rollout.candidate_version


def _canary_move(
    model: ModelSpec, actual: ActualModel, served: Sequence[ActualVersion]
) -> Iterator[ServingMove]:
    """A canary's candidate answers clients too: reviewed against the Production served now."""
    rollout, candidate = model.rollout, model.rollout_candidate()
    if rollout is None or candidate is None or rollout.mode != RolloutMode.CANARY.value:
        return
    if rollout.effective_weight() == 0:
        return
    becoming = _becoming(model.name, candidate, actual)
    if becoming.version is not None and becoming.version == _canary_now(actual):
        return
    yield ServingMove(
        model.name,
        f"canary {rollout.effective_weight()}%",
        _ref(model.name, served[-1]) if served else None,
        becoming,
        candidate.breaking_change_acknowledged,
        candidate.sample_input,
        model.behaviour_limits,
        model.evaluation_file,
    )


def _model_moves(model: ModelSpec, actual: ActualModel) -> Iterator[ServingMove]:
    production = model.production()
    served = sorted(
        (v for v in actual.versions if v.stage is Stage.PRODUCTION), key=lambda v: v.number
    )
    yield from _canary_move(model, actual, served)
    if production is not None:
        becoming = _becoming(model.name, production, actual)
        if not any(v.sha256 == production.sha256 for v in served) and not (
            actual.moved_off_production(production.sha256)
        ):
            yield ServingMove(
                model.name,
                f"stage {Stage.PRODUCTION.value}",
                _ref(model.name, served[-1]) if served else None,
                becoming,
                production.breaking_change_acknowledged,
                production.sample_input,
                model.behaviour_limits,
                model.evaluation_file,
            )
    for spec in model.versions:
        becoming = _becoming(model.name, spec, actual)
        for alias in spec.aliases:
            current = actual.aliases.get(alias)
            if current is not None and current == becoming.version:
                continue
            pointed = actual.version(current) if current is not None else None
            yield ServingMove(
                model.name,
                f"alias {alias}",
                _ref(model.name, pointed) if pointed is not None else None,
                becoming,
                spec.breaking_change_acknowledged,
                spec.sample_input,
                model.behaviour_limits,
                model.evaluation_file,
            )


def serving_moves(desired: ModelsFile, actual: RegistryState) -> tuple[ServingMove, ...]:
    """Every version that becomes Production or that an alias moves to.

    Moves of one model from the same served version to the same version are one move
    (``stage Production, alias champion``): one review, one refusal.
    """
    merged: dict[tuple[Any, ...], ServingMove] = {}
    for model in desired.models:
        for move in _model_moves(model, actual.models.get(model.name, ActualModel(model.name))):
            same = (move.served.key if move.served else None, move.becoming.key)
            found = merged.get(same)
            merged[same] = (
                move
                if found is None
                else replace(found, follows=f"{found.follows}, {move.follows}")
            )
    return tuple(merged.values())


def needed(moves: tuple[ServingMove, ...]) -> dict[SignatureKey, VersionRef]:
    """The versions whose signatures a review of ``moves`` reads (each once)."""
    refs: dict[SignatureKey, VersionRef] = {}
    for move in moves:
        for ref in (move.served, move.becoming):
            if ref is not None:
                refs.setdefault(ref.key, ref)
    return refs


# --- reviewing -------------------------------------------------------------------------------


def _review(move: ServingMove, evidence: Evidence) -> SignatureReview:
    found = _signature_review(move, evidence.signatures)
    behaviours = []
    for key in move.behaviour_keys():
        if key not in evidence.behaviours:
            continue  # a version that could not be loaded: the signature review says why
        result = evidence.behaviours[key]
        if isinstance(result, str):
            behaviours.append(Behaviour(key[2], problem=result))
        else:
            behaviours.append(Behaviour(key[2], diff=result))
    return replace(found, behaviours=tuple(behaviours))


def _signature_review(move: ServingMove, signatures: Signatures) -> SignatureReview:
    becoming = signatures.get(move.becoming.key, "not read")
    if isinstance(becoming, str):
        return SignatureReview(move, problem=f"{move.becoming.label()}: {becoming}")
    if move.served is None:
        return SignatureReview(move, listing(becoming))
    served = signatures.get(move.served.key, "not read")
    if isinstance(served, str):
        return SignatureReview(
            move, listing(becoming), problem=f"served {move.served.label()}: {served}"
        )
    return SignatureReview(move, compare(served, becoming), compared=True)


def review(
    desired: ModelsFile, actual: RegistryState, evidence: Evidence
) -> tuple[SignatureReview, ...]:
    """Each serving move with its signature and behaviour against the served one."""
    return tuple(_review(move, evidence) for move in serving_moves(desired, actual))


def refusals(
    reviews: tuple[SignatureReview, ...],
) -> tuple[BreakingChangeError | BehaviourLimitError, ...]:
    """The moves apply must not make: breaking and not acknowledged, or past a limit."""
    found: list[BreakingChangeError | BehaviourLimitError] = []
    for item in reviews:
        if item.refused_breaking:
            breaking = [f"{d.side} {d.name}: {', '.join(d.reasons)}" for d in item.breaking]
            found.append(
                BreakingChangeError(item.move.model, item.transition(), breaking, ACKNOWLEDGE_FIELD)
            )
        if item.limit_breaches:
            found.append(
                BehaviourLimitError(item.move.model, item.transition(), item.limit_breaches)
            )
    return tuple(found)
