"""make_plan(desired, actual) -> Plan: the pure difference between models.yaml and MLflow."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from contracts.registry import (
    BREAKING_CHANGE_ACKNOWLEDGED_TAG,
    MANAGED_TAG,
    ROLLOUT_TAG,
    STAGE_TAG,
    Stage,
)
from contracts.rollout import Rollout, RolloutContractError, RolloutMode
from reconciler import progressive
from reconciler.progressive import Phase, ProgressiveState, ProgressiveStateError
from reconciler.serving import Evidence, SignatureReview, review
from reconciler.spec import ModelsFile, ModelSpec, VersionSpec
from reconciler.state import ActualModel, ActualVersion, RegistryState


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ARCHIVE = "archive"
    DELETE = "delete"
    NOOP = "no-op"


class Kind(StrEnum):
    MODEL = "model"
    MODEL_DESCRIPTION = "model-description"
    MODEL_TAG = "model-tag"
    VERSION = "version"
    STAGE = "stage"
    VERSION_DESCRIPTION = "version-description"
    VERSION_TAG = "version-tag"
    ALIAS = "alias"
    ROLLOUT = "rollout"
    PROGRESSIVE = "progressive"
    """A progressive rollout: started (create), running or rolled back (no-op), ended
    (delete). ``before`` is the stable version's number, ``after`` a text for people."""


@dataclass(frozen=True, slots=True)
class Target:
    """What a change touches. ``version`` is MLflow's number, None while not registered yet."""

    kind: Kind
    model: str
    version: str | None = None
    sha256: str | None = None
    key: str | None = None

    def label(self) -> str:
        text = self.model
        if self.version is not None:
            text += f" v{self.version}"
        elif self.sha256 is not None:
            text += f" (new {self.sha256[:12]})"
        if self.key is not None:
            text += f" {self.key}"
        return text


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a plan. ``reason`` is for people; apply decides on the other fields."""

    action: Action
    target: Target
    before: str | None = None
    after: str | None = None
    reason: str = ""

    def identity(self) -> tuple[Any, ...]:
        """Everything but the reason: two plans agree when their identities agree."""
        return (self.action, self.target, self.before, self.after)


OTHERS_SHOWN = 20
"""Names shown on the plan's line about registered models models.yaml does not name."""


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[Change, ...] = ()
    reviews: tuple[SignatureReview, ...] = ()
    """The signatures of the versions that become served against the served ones."""
    others: tuple[str, ...] = ()
    """Registered models models.yaml does not name: never changed, listed on one line."""

    def others_line(self) -> str | None:
        """One line naming the registered models the reconciler leaves alone; None if none."""
        if not self.others:
            return None
        shown = ", ".join(self.others[:OTHERS_SHOWN])
        more = len(self.others) - OTHERS_SHOWN
        count = len(self.others)
        return (
            f"Not in models.yaml, left alone: {count} registered model{'s' if count != 1 else ''}"
            f" ({shown}{f', and {more} more' if more > 0 else ''})."
        )

    @property
    def actionable(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.action is not Action.NOOP)

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable)

    def counts(self) -> Counter[Action]:
        return Counter(c.action for c in self.actionable)

    def summary(self) -> str:
        counts = self.counts()
        held = [
            c.target.model for c in self.changes
            if c.target.kind is Kind.PROGRESSIVE and c.action is Action.NOOP
        ]  # fmt: skip
        if not self.has_changes and held:
            return (
                f"No changes to make. Production of {', '.join(held)} is held by a progressive "
                "rollout (running or rolled back, see above)."
            )
        if not self.has_changes:
            return "No changes. MLflow matches models.yaml."
        return (
            f"Plan: {counts[Action.CREATE]} to add, {counts[Action.UPDATE]} to change, "
            f"{counts[Action.ARCHIVE]} to archive, {counts[Action.DELETE]} to delete."
        )


NEW = "(new)"
"""Stands for a version number MLflow has not assigned yet."""


def progressive_text(change: Change) -> str:
    """A progressive change for people: start, where it stands, or its end."""
    target = change.target
    stable = f"v{change.before}"
    candidate = f"v{target.version}" if target.version else f"(new {(target.sha256 or '')[:12]})"
    if change.action is Action.CREATE:
        return f"start progressive rollout {stable} -> {candidate} (steps {change.after})"
    if change.action is Action.DELETE:
        return f"end progressive rollout {stable} -> {candidate} (was at {change.after})"
    return f"progressive rollout {stable} -> {candidate}: {change.after}"


def rollout_value(model: ModelSpec, actual: ActualModel) -> Rollout | str | None:
    """The ROLLOUT_TAG the file asks for: a Rollout, a text while its candidate is not
    registered yet, or None when no rollout is running."""
    rollout = model.rollout
    candidate = model.rollout_candidate()
    if rollout is None or candidate is None:
        return None
    weight = rollout.effective_weight()
    if rollout.mode == "canary" and weight == 0:
        return None
    found = actual.by_sha256().get(candidate.sha256)
    if found is None:
        return f"{rollout.mode} {weight}% to (new {candidate.sha256[:12]})"
    return Rollout(found.version, RolloutMode(rollout.mode), float(weight))


def parse_rollout(text: str | None) -> Rollout | None:
    """The ROLLOUT_TAG in MLflow; None when absent or invalid (then it differs from any)."""
    if text is None:
        return None
    try:
        return Rollout.parse(text)
    except RolloutContractError:
        return None


def make_plan(desired: ModelsFile, actual: RegistryState, evidence: Evidence | None = None) -> Plan:
    """The changes that make ``actual`` match ``desired``: pure, no I/O.

    With ``evidence`` (read by reconciler.probe), the plan also reviews the signature and the
    behaviour of every version that becomes served against the served one.
    """
    changes: list[Change] = []
    for model in desired.models:
        changes.extend(_model_changes(model, actual.models.get(model.name)))
    reviews = review(desired, actual, evidence) if evidence is not None else ()
    return Plan(tuple(changes), reviews, others=actual.others)


def _model_changes(model: ModelSpec, found: ActualModel | None) -> Iterator[Change]:
    name = model.name
    if found is None:
        yield Change(
            Action.CREATE,
            Target(Kind.MODEL, name),
            after=model.description or "",
            reason="declared in models.yaml, absent from MLflow",
        )
        actual = ActualModel(name=name, description=model.description or "")
    else:
        actual = found
        if not actual.managed:
            yield Change(
                Action.CREATE,
                Target(Kind.MODEL_TAG, name, key=MANAGED_TAG),
                after="true",
                reason="declared in models.yaml: the reconciler takes it over",
            )
    if model.description is not None and model.description != actual.description:
        yield Change(
            Action.UPDATE,
            Target(Kind.MODEL_DESCRIPTION, name),
            before=actual.description,
            after=model.description,
            reason="description differs from models.yaml",
        )
    yield from _tag_changes(
        Kind.MODEL_TAG,
        model=name,
        version=None,
        sha256=None,
        wanted=model.tags,
        present=actual.user_tags,
    )
    changes = [*_version_changes(model, actual), *_alias_changes(model, actual)]
    if model.progressive is None:
        yield from changes
        yield from _rollout_changes(model, actual)
    else:
        yield from _progressive_changes(model, actual, changes)


def _tag_changes(
    kind: Kind,
    *,
    model: str,
    version: str | None,
    sha256: str | None,
    wanted: Mapping[str, str],
    present: Mapping[str, str],
) -> Iterator[Change]:
    for key, value in wanted.items():
        target = Target(kind, model, version, sha256, key)
        if key not in present:
            yield Change(Action.CREATE, target, after=value, reason="tag in models.yaml")
        elif present[key] != value:
            yield Change(
                Action.UPDATE, target, present[key], value, reason="tag differs from models.yaml"
            )
    for key in sorted(set(present) - set(wanted)):
        yield Change(
            Action.DELETE,
            Target(kind, model, version, sha256, key),
            before=present[key],
            reason="tag not in models.yaml",
        )


def acknowledgement_tags(spec: VersionSpec) -> dict[str, str]:
    """The version's acknowledged breaking change as its tag: the sidecar copies it into the
    manifest, and a server swaps in a changed signature only with it."""
    reason = spec.breaking_change_acknowledged
    return {BREAKING_CHANGE_ACKNOWLEDGED_TAG: reason} if reason is not None else {}


def _stage_change(target: Target, before: Stage, after: Stage, reason: str) -> Change:
    action = Action.ARCHIVE if after is Stage.ARCHIVED else Action.UPDATE
    return Change(action, target, before.value, after.value, reason)


def _version_changes(model: ModelSpec, actual: ActualModel) -> Iterator[Change]:
    name = model.name
    by_sha = actual.by_sha256()
    declared = {v.sha256 for v in model.versions}
    production = model.production()
    for spec in model.versions:
        found = by_sha.get(spec.sha256)
        if found is None and spec.version is not None:
            found = yield from _adoption(model, spec.version, spec.sha256, actual)
            if found is None:
                continue
        if found is None:
            yield Change(
                Action.CREATE,
                Target(Kind.VERSION, name, sha256=spec.sha256),
                after=spec.source,
                reason="no version of this model has this sha256",
            )
            if spec.stage is not Stage.NONE:
                yield _stage_change(
                    Target(Kind.STAGE, name, sha256=spec.sha256),
                    Stage.NONE,
                    spec.stage,
                    "stage in models.yaml",
                )
            for key, value in {**spec.tags, **acknowledgement_tags(spec)}.items():
                yield Change(
                    Action.CREATE,
                    Target(Kind.VERSION_TAG, name, sha256=spec.sha256, key=key),
                    after=value,
                    reason="tag in models.yaml",
                )
            if spec.description:
                yield Change(
                    Action.UPDATE,
                    Target(Kind.VERSION_DESCRIPTION, name, sha256=spec.sha256),
                    before="",
                    after=spec.description,
                    reason="description in models.yaml",
                )
            continue
        number = found.version
        if found.stage is not spec.stage:
            yield _stage_change(
                Target(Kind.STAGE, name, number, spec.sha256),
                found.stage,
                spec.stage,
                "stage differs from models.yaml",
            )
        elif found.tags.get(STAGE_TAG) != spec.stage.value:
            yield Change(
                Action.UPDATE if STAGE_TAG in found.tags else Action.CREATE,
                Target(Kind.VERSION_TAG, name, number, spec.sha256, STAGE_TAG),
                found.tags.get(STAGE_TAG),
                spec.stage.value,
                reason="the stage tag (read by the sidecar) does not mirror the stage",
            )
        if spec.description is not None and spec.description != found.description:
            yield Change(
                Action.UPDATE,
                Target(Kind.VERSION_DESCRIPTION, name, number, spec.sha256),
                found.description,
                spec.description,
                reason="description differs from models.yaml",
            )
        yield from _tag_changes(
            Kind.VERSION_TAG,
            model=name,
            version=number,
            sha256=spec.sha256,
            wanted=spec.tags,
            present=found.user_tags,
        )
        ack = BREAKING_CHANGE_ACKNOWLEDGED_TAG
        yield from _tag_changes(
            Kind.VERSION_TAG,
            model=name,
            version=number,
            sha256=spec.sha256,
            wanted=acknowledgement_tags(spec),
            present={ack: found.tags[ack]} if ack in found.tags else {},
        )
    adopted = {v.version for v in model.versions if v.version is not None}
    for other in actual.versions:
        if other.sha256 is not None and other.sha256 in declared and by_sha[other.sha256] is other:
            continue
        if other.sha256 is None and other.version in adopted:
            continue
        yield from _undeclared_version(model, other, production is not None)


def _adoption(
    model: ModelSpec, number: str, sha256: str, actual: ActualModel
) -> Generator[Change, None, ActualVersion | None]:
    """An unmanaged version models.yaml names explicitly: the reconciler takes it over."""
    existing = actual.version(number)
    target = Target(Kind.VERSION, model.name, number, sha256)
    if existing is None or existing.sha256 is not None:
        yield Change(
            Action.NOOP,
            target,
            reason=f"cannot adopt version {number}: "
            + ("it does not exist" if existing is None else "it is managed with another sha256"),
        )
        return None
    yield Change(
        Action.UPDATE,
        target,
        before="unmanaged",
        after="managed",
        reason="adopt: models.yaml names this version (its sha256 is checked first)",
    )
    return existing


def _undeclared_version(
    model: ModelSpec, version: ActualVersion, file_has_production: bool
) -> Iterator[Change]:
    target = Target(Kind.STAGE, model.name, version.version, version.sha256)
    managed = version.sha256 is not None
    if version.stage is Stage.PRODUCTION and file_has_production:
        yield _stage_change(
            target,
            version.stage,
            Stage.ARCHIVED,
            "models.yaml declares another Production version (one per model)"
            + ("" if managed else "; this version is unmanaged"),
        )
    elif managed and model.prune and version.stage is not Stage.ARCHIVED:
        yield _stage_change(
            target, version.stage, Stage.ARCHIVED, "not in models.yaml and the model says prune"
        )
    elif not managed:
        yield Change(
            Action.NOOP,
            Target(Kind.VERSION, model.name, version.version),
            before=version.stage.value,
            after=version.stage.value,
            reason="unmanaged (no sha256 tag): shown, never changed",
        )


def _alias_changes(model: ModelSpec, actual: ActualModel) -> Iterator[Change]:
    name = model.name
    by_sha = actual.by_sha256()
    wanted: dict[str, str] = {
        alias: spec.sha256 for spec in model.versions for alias in spec.aliases
    }
    for alias, sha256 in wanted.items():
        found = by_sha.get(sha256)
        number = found.version if found is not None else None
        current = actual.aliases.get(alias)
        target = Target(Kind.ALIAS, name, number, sha256, alias)
        if current is None:
            yield Change(Action.CREATE, target, after=number or NEW, reason="alias in models.yaml")
        elif current != number:
            yield Change(
                Action.UPDATE,
                target,
                current,
                number or NEW,
                reason="alias points at another version than models.yaml says",
            )
    for alias, number in sorted(actual.aliases.items()):
        if alias in wanted:
            continue
        pointed = actual.version(number)
        if pointed is not None and pointed.sha256 is not None:
            yield Change(
                Action.DELETE,
                Target(Kind.ALIAS, name, number, pointed.sha256, alias),
                before=number,
                reason="alias on a managed version, not in models.yaml",
            )
        else:
            yield Change(
                Action.NOOP,
                Target(Kind.ALIAS, name, number, None, alias),
                before=number,
                after=number,
                reason="alias on an unmanaged version: left as is",
            )


def _rollout_changes(model: ModelSpec, actual: ActualModel) -> Iterator[Change]:
    wanted = rollout_value(model, actual)
    present_text = actual.tags.get(ROLLOUT_TAG)
    present = parse_rollout(present_text)
    candidate = model.rollout_candidate()
    target = Target(
        Kind.ROLLOUT,
        model.name,
        wanted.candidate_version if isinstance(wanted, Rollout) else None,
        candidate.sha256 if wanted is not None and candidate else None,
        ROLLOUT_TAG,
    )
    if wanted is None:
        if present_text is not None:
            yield Change(
                Action.DELETE, target, before=present_text, reason="no rollout in models.yaml"
            )
        return
    if wanted == present:
        return
    registered = isinstance(wanted, Rollout)
    yield Change(
        Action.CREATE if present_text is None else Action.UPDATE,
        target,
        before=present_text,
        after=wanted.to_json() if isinstance(wanted, Rollout) else wanted,
        reason="rollout in models.yaml" + ("" if registered else " (set once registered)"),
    )


# --- progressive rollouts ---------------------------------------------------------------------


def stable_version(actual: ActualModel) -> ActualVersion | None:
    """The version serving follows now: MLflow's Production version (the newest if several)."""
    found = [v for v in actual.versions if v.stage is Stage.PRODUCTION]
    return max(found, key=lambda v: v.number) if found else None


def read_progressive(actual: ActualModel) -> ProgressiveState | None:
    """The model's progressive state; None when absent or unreadable (a new start replaces it)."""
    try:
        return progressive.read(actual.name, actual.tags)
    except ProgressiveStateError:
        return None


def _held(change: Change, candidate_sha256: str, stable: str) -> bool:
    """Part of the move to the new Production version, which ``promote`` makes at the end: the
    candidate's stage and aliases, and the stable version's."""
    target = change.target
    if change.action is Action.NOOP or target.kind not in (Kind.STAGE, Kind.ALIAS):
        return False
    return target.sha256 == candidate_sha256 or target.version == stable


def release_changes(model: ModelSpec, actual: ActualModel) -> tuple[Change, ...]:
    """The changes a progressive rollout holds back until ``promote`` ends it: the candidate
    to Production (and its aliases), the stable version to what models.yaml says."""
    wanted = model.production()
    stable = stable_version(actual)
    if wanted is None or stable is None:
        return ()
    changes = [*_version_changes(model, actual), *_alias_changes(model, actual)]
    return tuple(c for c in changes if _held(c, wanted.sha256, stable.version))


def _progressive_changes(
    model: ModelSpec, actual: ActualModel, changes: list[Change]
) -> Iterator[Change]:
    assert model.progressive is not None
    wanted = model.production()
    stable = stable_version(actual)
    state = read_progressive(actual)
    if (
        wanted is None
        or stable is None
        or stable.sha256 == wanted.sha256
        or actual.moved_off_production(wanted.sha256)
    ):
        # Nothing to roll out: no Production version yet, models.yaml's is served, or it was
        # served until a hand change in MLflow (undone at once, like any drift).
        yield from changes
        yield from _progressive_ended(model, actual, state)
        return
    yield from (c for c in changes if not _held(c, wanted.sha256, stable.version))
    found = actual.by_sha256().get(wanted.sha256)
    target = Target(Kind.PROGRESSIVE, model.name, found.version if found else None, wanted.sha256)
    ours = state is not None and state.candidate_sha256 == wanted.sha256
    if ours and state is not None and state.phase is Phase.RUNNING:
        yield Change(
            Action.NOOP,
            target,
            before=state.stable_version,
            after=f"running, {state.position()}",
            reason="`promote` advances it on the servers' metrics, then makes it Production",
        )
        return
    if ours and state is not None and state.phase is Phase.ROLLED_BACK:
        yield Change(
            Action.NOOP,
            target,
            before=state.stable_version,
            after=f"rolled back at {state.position()}",
            reason=f"{state.reason}. v{state.stable_version} serves every request and stays "
            f"Production; this version is not tried again. Revert models.yaml to "
            f"v{state.stable_version} (git revert), or declare a new version",
        )
        return
    yield Change(
        Action.CREATE,
        target,
        before=stable.version,
        after=progressive.steps_text(progressive.steps_of(model.progressive.steps)),
        reason=f"Production moves to it step by step: apply gates it and starts the first "
        f"step; v{stable.version} stays Production until `promote` has passed every step",
    )


def _progressive_ended(
    model: ModelSpec, actual: ActualModel, state: ProgressiveState | None
) -> Iterator[Change]:
    """A running rollout models.yaml no longer asks for (reverted): traffic back to stable."""
    if state is not None and state.phase is Phase.RUNNING:
        yield Change(
            Action.DELETE,
            Target(Kind.PROGRESSIVE, model.name, state.candidate_version, state.candidate_sha256),
            before=state.stable_version,
            after=state.position(),
            reason="models.yaml declares the served version as Production again: every "
            "request goes back to it",
        )
    elif ROLLOUT_TAG in actual.tags:
        yield Change(
            Action.DELETE,
            Target(Kind.ROLLOUT, model.name, key=ROLLOUT_TAG),
            before=actual.tags[ROLLOUT_TAG],
            reason="no rollout runs for this model",
        )
