"""apply: make MLflow match models.yaml in a safe order, under a lock, then re-plan."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contracts.registry import (
    APPLIED_BY_TAG,
    GIT_COMMIT_TAG,
    MANAGED_TAG,
    ROLLOUT_TAG,
    SHA256_TAG,
    SIZE_TAG,
    SOURCE_TAG,
    STAGE_TAG,
    Stage,
)
from reconciler import render
from reconciler.errors import (
    ApplyError,
    ChecksumMismatchError,
    LockedError,
    ReconcilerError,
    RegistryUnavailableError,
    SourceError,
    StalePlanError,
)
from reconciler.gate import DEFAULT_TIME_LIMIT, Fetched, check_artifact, fetch, gate, inspect
from reconciler.plan import (
    Action,
    Change,
    Kind,
    Plan,
    acknowledgement_tags,
    make_plan,
    read_progressive,
)
from reconciler.probe import SignatureProbe
from reconciler.progressive import PROGRESSIVE_TAG, Phase, ProgressiveState, steps_of
from reconciler.serving import refusals
from reconciler.spec import Desired, ModelSpec, VersionSpec
from reconciler.state import LOCK_TAG, ActualModel, Registry, RegistryState

log = logging.getLogger(__name__)

PROMOTED = (Stage.PRODUCTION, Stage.STAGING)
"""Stages a version reaches only through the promotion gate."""


@dataclass(frozen=True, slots=True)
class Audit:
    """Who applied, from which commit: written on every version the reconciler registers."""

    applied_by: str
    git_commit: str | None = None


@dataclass(frozen=True, slots=True)
class LockOptions:
    name: str = "mlgitops-apply-lock"
    wait_seconds: float = 120.0
    lease_seconds: float = 900.0
    poll_seconds: float = 1.0


@dataclass(slots=True)
class ApplyResult:
    first_plan: Plan
    final_plan: Plan = field(default_factory=Plan)
    done: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def describe(change: Change) -> str:
    """One change in words, for apply's done and FAILED lines and errors."""
    return render.change_text(change)


# --- the lock -----------------------------------------------------------------------------------


class LockNameTakenError(ReconcilerError):
    """A registered model that is not an apply lock bears the lock's name: never deleted."""

    def __init__(self, lock_name: str) -> None:
        super().__init__(
            f"a registered model named {lock_name!r} exists and is not an apply lock (it has no "
            f"{LOCK_TAG} tag): apply never deletes it. Rename that model, or give the lock "
            "another name with RECONCILER_LOCK_NAME."
        )


@contextlib.contextmanager
def apply_lock(
    registry: Registry,
    options: LockOptions,
    *,
    holder: str,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Callable[[], None]]:
    """Hold the registry-wide apply lock: wait for another apply, take over an expired one.

    Yields ``keep_alive()``: call it between steps; it extends the lease once half of it has
    passed, so a long apply is not taken over while it still runs. The lock is released however
    the body ends; a failure to release never hides the body's own error.
    """
    token = uuid.uuid4().hex
    started = clock()
    announced = False
    while True:
        now = clock()
        tags = {
            LOCK_TAG: "true",
            "holder": holder,
            "token": token,
            "acquired_at": f"{now:.3f}",
            "expires_at": f"{now + options.lease_seconds:.3f}",
        }
        try:
            taken = registry.try_lock(options.name, tags)
        except BaseException:
            # Interrupted (SIGTERM, Ctrl-C) or failed while MLflow may already have created the
            # lock: delete it if it carries this run's token (unlock checks), then go on failing.
            with contextlib.suppress(Exception):
                registry.unlock(options.name, token)
            raise
        if taken:
            break
        current = registry.lock_tags(options.name)
        if current is None:
            continue  # released between our two calls
        if current.get(LOCK_TAG) != "true":
            raise LockNameTakenError(options.name)
        expires = float(current.get("expires_at", "0") or 0)
        if expires < clock():
            log.warning(
                "taking over an expired apply lock held by %s", current.get("holder", "unknown")
            )
            registry.unlock(options.name, current.get("token", ""))
            continue
        waited = clock() - started
        if waited >= options.wait_seconds:
            raise LockedError(current.get("holder", "unknown"), waited, options.name)
        if not announced:
            announced = True
            log.info(
                "another apply holds the lock (%s); waiting up to %.0fs",
                current.get("holder", "unknown"), options.wait_seconds,
            )  # fmt: skip
        sleep(options.poll_seconds)
    renewed = [clock()]

    def keep_alive() -> None:
        now = clock()
        if now - renewed[0] >= options.lease_seconds / 2:
            registry.set_model_tag(options.name, "expires_at", f"{now + options.lease_seconds:.3f}")
            renewed[0] = now

    try:  # from the moment the lock is ours: a signal on the next line releases it too
        log.info("apply lock taken", extra={"lock": options.name, "holder": holder})
        yield keep_alive
    except BaseException:
        with contextlib.suppress(Exception):  # the body's error is the one to report
            _release(registry, options.name, token, failing=True)
        raise
    _release(registry, options.name, token, failing=False)


def _release(registry: Registry, name: str, token: str, *, failing: bool) -> None:
    try:
        registry.unlock(name, token)
    except ReconcilerError as exc:
        if not failing:
            raise  # the error apply reports (once, by main)
        log.error(  # the body's error is the one reported: this is the only word of this one
            "could not release the apply lock %s (its lease expires by itself): %s",
            name, exc, extra={"lock": name},
        )  # fmt: skip
        return
    log.info("apply lock released", extra={"lock": name})


def default_holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


# --- registering versions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceRef:
    """What MLflow needs to register a version from a URI: the source and what contains it."""

    source: str
    run_id: str | None = None
    model_id: str | None = None


_LOGGED_MODEL = re.compile(r"^models:/(m-[0-9a-f]+)/?$")
_ALIAS = re.compile(r"^models:/([^/@]+)@([^/]+)/?$")
_LOGGED_MODEL_STORAGE = re.compile(r"/models/(m-[0-9a-f]+)/artifacts(/|$)")


def source_ref(source: str) -> SourceRef:
    """The run or logged model a URI source belongs to (MLflow refuses the version without it).

    ``runs:/<run>/path`` and a run's ``mlflow-artifacts:/<exp>/<run>/artifacts/...``: the run.
    ``models:/m-<id>`` and a logged model's ``mlflow-artifacts:/<exp>/models/m-<id>/artifacts``:
    the model id. ``models:/<name>/<version>``, ``s3://``...: nothing more.
    """
    if source.startswith("runs:/"):
        return SourceRef(source, run_id=source.removeprefix("runs:/").strip("/").split("/")[0])
    logged = _LOGGED_MODEL.match(source)
    if logged:
        return SourceRef(source, model_id=logged.group(1))
    if source.startswith("mlflow-artifacts:"):
        storage = _LOGGED_MODEL_STORAGE.search(source)
        if storage:
            return SourceRef(source, model_id=storage.group(1))
        parts = source.removeprefix("mlflow-artifacts:").strip("/").split("/")
        if len(parts) >= 3 and parts[2] == "artifacts":
            return SourceRef(source, run_id=parts[1])
    return SourceRef(source)


def pinned(registry: Registry, source: str) -> str:
    """``models:/<name>@<alias>`` -> ``models:/<name>/<version>`` it names now: a version's
    bytes never follow a later move of the alias. Any other source is itself."""
    alias = _ALIAS.match(source)
    if alias is None:
        return source
    name, key = alias.groups()
    return f"models:/{name}/{registry.alias_version(name, key)}"


def _check_before_registering(
    fetched: Fetched, model: ModelSpec, spec: VersionSpec, time_limit: float
) -> None:
    if not fetched.matches(spec.sha256):
        raise ChecksumMismatchError(spec.source, spec.sha256, fetched.sha256)
    check_artifact(
        fetched, model=model.name, version=f"(new {spec.sha256[:12]})", sha256=spec.sha256,
        sample=spec.sample_input, time_limit=time_limit,
    )  # fmt: skip


def register(
    registry: Registry,
    desired: Desired,
    model: ModelSpec,
    spec: VersionSpec,
    audit: Audit,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> str:
    """Check a source (identity, onnxruntime), upload it if it is a repository path, register
    it: its number. Nothing is uploaded or registered before the check passes."""
    local = desired.local_path(spec.source)
    if local is not None:
        if not local.exists():
            raise SourceError(spec.source, f"not found: {local}")
        fetched = inspect(local, spec.source)
        _check_before_registering(fetched, model, spec, time_limit)
        uploaded, run_id = registry.upload(
            model.name, spec.sha256, local, {SOURCE_TAG: spec.source, SHA256_TAG: spec.sha256}
        )
        ref = SourceRef(uploaded, run_id=run_id)
    else:
        ref = source_ref(pinned(registry, spec.source))
        with tempfile.TemporaryDirectory(prefix="mlgitops-source-") as scratch:
            fetched = fetch(registry, ref.source, Path(scratch))
            _check_before_registering(fetched, model, spec, time_limit)
    tags = {
        **spec.tags,
        **acknowledgement_tags(spec),
        SHA256_TAG: spec.sha256,
        SIZE_TAG: str(fetched.size),
        SOURCE_TAG: spec.source,
        MANAGED_TAG: "true",
        GIT_COMMIT_TAG: audit.git_commit or "unknown",
        APPLIED_BY_TAG: audit.applied_by,
        STAGE_TAG: Stage.NONE.value,
    }
    return registry.register_version(
        model.name, ref.source, ref.run_id, tags, spec.description, model_id=ref.model_id
    )


def adopt(registry: Registry, model: ModelSpec, version: str, sha256: str, audit: Audit) -> None:
    """Take over an unmanaged version models.yaml names: check its bytes, then tag it."""
    spec = next(v for v in model.versions if v.sha256 == sha256)
    uri = registry.download_uri(model.name, version)
    with tempfile.TemporaryDirectory(prefix="mlgitops-adopt-") as scratch:
        fetched = fetch(registry, uri, Path(scratch))
    if not fetched.matches(sha256):
        raise ChecksumMismatchError(f"{model.name} version {version}", sha256, fetched.sha256)
    tags = {
        SIZE_TAG: str(fetched.size),
        SOURCE_TAG: spec.source,
        MANAGED_TAG: "true",
        GIT_COMMIT_TAG: audit.git_commit or "unknown",
        APPLIED_BY_TAG: audit.applied_by,
        SHA256_TAG: sha256,  # last: the version counts as managed once this is set
    }
    for key, value in tags.items():
        registry.set_version_tag(model.name, version, key, value)


# --- executing one change -------------------------------------------------------------------------


def safe_order(change: Change) -> int:
    """Safe order: metadata, then promotions (Production first), then demotions, then aliases."""
    kind = change.target.kind
    if kind is Kind.STAGE:
        return {Stage.PRODUCTION: 1, Stage.STAGING: 2, Stage.NONE: 3, Stage.ARCHIVED: 4}[
            Stage(change.after or Stage.NONE.value)
        ]
    if kind is Kind.ALIAS:
        return 6 if change.action is Action.DELETE else 5
    if kind in (Kind.ROLLOUT, Kind.PROGRESSIVE):
        return 7
    return 0


# --- progressive rollouts: their start and their end by models.yaml ---------------------------


def write_progress(registry: Registry, name: str, state: ProgressiveState) -> None:
    """Write a progressive state; a running one's step goes to the rollout tag right after
    (the state first: whoever sees traffic split finds why)."""
    registry.set_model_tag(name, PROGRESSIVE_TAG, state.to_json())
    if state.phase is Phase.RUNNING:
        registry.set_model_tag(name, ROLLOUT_TAG, state.rollout().to_json())


def start_progressive(
    registry: Registry, model: ModelSpec, change: Change, now: float
) -> ProgressiveState:
    """The first step of a progressive rollout: the state and its rollout tag, stages untouched."""
    target = change.target
    assert model.progressive is not None
    assert target.version
    assert target.sha256
    assert change.before
    state = ProgressiveState(
        candidate_version=target.version,
        candidate_sha256=target.sha256,
        stable_version=change.before,
        steps=steps_of(model.progressive.steps),
        step=0,
        step_started_at=now,
        phase=Phase.RUNNING,
    )
    write_progress(registry, model.name, state)
    log.info(
        "progressive rollout started",
        extra={"model": model.name, "candidate": state.candidate_version,
               "stable": state.stable_version, "step": state.current.label()},
    )  # fmt: skip
    return state


def end_progressive(registry: Registry, actual: ActualModel, reason: str) -> None:
    """Every request back to the stable version (the rollout tag goes first), then the state."""
    if ROLLOUT_TAG in actual.tags:
        registry.delete_model_tag(actual.name, ROLLOUT_TAG)
    state = read_progressive(actual)
    if state is not None and state.phase is Phase.RUNNING:
        registry.set_model_tag(
            actual.name, PROGRESSIVE_TAG, state.ended(Phase.ROLLED_BACK, reason).to_json()
        )


def execute(registry: Registry, change: Change) -> None:
    """Carry out one resolved change (its version number is known)."""
    target, after = change.target, change.after
    model, version, key = target.model, target.version, target.key
    deleting = change.action is Action.DELETE
    if target.kind in (Kind.MODEL_TAG, Kind.ROLLOUT):
        assert key is not None
        if deleting:
            registry.delete_model_tag(model, key)
        else:
            registry.set_model_tag(model, key, after or "")
        return
    if target.kind is Kind.MODEL_DESCRIPTION:
        registry.set_model_description(model, after or "")
        return
    if version is None:
        raise ReconcilerError(f"{describe(change)}: the version is not registered")
    if target.kind is Kind.VERSION_TAG:
        assert key is not None
        if deleting:
            registry.delete_version_tag(model, version, key)
        else:
            registry.set_version_tag(model, version, key, after or "")
    elif target.kind is Kind.VERSION_DESCRIPTION:
        registry.set_version_description(model, version, after or "")
    elif target.kind is Kind.STAGE:
        stage = Stage(after or Stage.NONE.value)
        registry.set_stage(model, version, stage)
        registry.set_version_tag(model, version, STAGE_TAG, stage.value)
    elif target.kind is Kind.ALIAS:
        assert key is not None
        if deleting:
            registry.delete_alias(model, key)
        else:
            registry.set_alias(model, key, version)
    else:
        raise ReconcilerError(f"cannot execute {describe(change)}")


# --- apply ----------------------------------------------------------------------------------------


def _specs(desired: Desired) -> Mapping[str, ModelSpec]:
    return {model.name: model for model in desired.file.models}


def _gate_targets(changes: tuple[Change, ...]) -> list[Change]:
    """Changes that make a version Staging/Production, point an alias at it (a sidecar may
    follow any alias) or make it a rollout candidate."""
    targets = []
    for change in changes:
        kind = change.target.kind
        promotes = kind is Kind.STAGE and change.after in PROMOTED
        moves_alias = kind is Kind.ALIAS and change.action is not Action.DELETE
        candidate = kind in (Kind.ROLLOUT, Kind.PROGRESSIVE) and change.action is Action.CREATE
        candidate = candidate or (kind is Kind.ROLLOUT and change.action is Action.UPDATE)
        if promotes or moves_alias or candidate:
            targets.append(change)
    return targets


def apply(
    registry: Registry,
    desired: Desired,
    audit: Audit,
    lock: LockOptions,
    *,
    expected: Plan | None = None,
    holder: str | None = None,
    gate_seconds: float = DEFAULT_TIME_LIMIT,
) -> ApplyResult:
    """Register what is missing, gate and promote, move aliases; then re-plan.

    ``gate_seconds`` bounds each onnxruntime check (load and one inference).

    Raises:
        LockedError: another apply kept the lock for longer than ``lock.wait_seconds``.
        StalePlanError: ``expected`` (a saved plan) no longer matches MLflow.
        ApplyError: MLflow became unavailable part-way; lists what was done.
    """
    names = [model.name for model in desired.file.models]
    specs = _specs(desired)
    unlocked = make_plan(desired.file, registry.read(names))
    if not unlocked.has_changes and expected is None:
        # Nothing to do: not even the lock is taken, so a converged apply writes nothing.
        return ApplyResult(first_plan=unlocked, final_plan=unlocked)
    probe = SignatureProbe(registry, desired, time_limit=gate_seconds)
    with apply_lock(registry, lock, holder=holder or default_holder()) as keep_alive:
        state = registry.read(names)
        plan = make_plan(desired.file, state, probe.evidence(state))
        result = ApplyResult(first_plan=plan)
        if expected is not None:
            _check_fresh(expected, plan)
        blocked: set[str] = set()
        try:
            _register_missing(
                registry,
                desired=desired,
                specs=specs,
                plan=plan,
                audit=audit,
                result=result,
                blocked=blocked,
                keep_alive=keep_alive,
                time_limit=gate_seconds,
            )
            state = registry.read(names)
            second = make_plan(desired.file, state, probe.evidence(state))
            for refusal in refusals(second.reviews):  # breaking, not acknowledged
                blocked.add(refusal.model)
                result.failures.append(str(refusal))
            _gate_and_apply(
                registry,
                specs=specs,
                plan=second,
                state=state,
                result=result,
                blocked=blocked,
                keep_alive=keep_alive,
                time_limit=gate_seconds,
            )
        except ReconcilerError as exc:  # MLflow gone, or a request it refused: stop here
            raise ApplyError(result.done, [*result.failures, str(exc)]) from exc
        result.final_plan = make_plan(desired.file, registry.read(names))
    leftover = [c for c in result.final_plan.actionable if c.target.model not in blocked]
    for change in leftover:
        result.failures.append(f"still differs after apply: {describe(change)}")
    return result


def _check_fresh(expected: Plan, current: Plan) -> None:
    saved = {c.identity() for c in expected.actionable}
    now = {c.identity() for c in current.actionable}
    if saved != now:
        raise StalePlanError(added=len(now - saved), removed=len(saved - now))


def _register_missing(
    registry: Registry,
    *,
    desired: Desired,
    specs: Mapping[str, ModelSpec],
    plan: Plan,
    audit: Audit,
    result: ApplyResult,
    blocked: set[str],
    keep_alive: Callable[[], None],
    time_limit: float,
) -> None:
    for change in plan.actionable:
        keep_alive()
        target = change.target
        model = specs[target.model]
        if target.kind is Kind.VERSION and change.action is Action.UPDATE:
            try:
                adopt(registry, model, target.version or "", target.sha256 or "", audit)
            except RegistryUnavailableError:
                raise
            except ReconcilerError as exc:
                blocked.add(model.name)
                result.failures.append(f"{model.name}: not adopted: {exc}")
                continue
            result.done.append(describe(change))
            continue
        if change.action is not Action.CREATE:
            continue
        if target.kind is Kind.MODEL:
            registry.create_model(
                model.name, model.description, {**model.tags, MANAGED_TAG: "true"}
            )
            result.done.append(describe(change))
        elif target.kind is Kind.VERSION:
            spec = next(v for v in model.versions if v.sha256 == target.sha256)
            try:
                number = register(registry, desired, model, spec, audit, time_limit=time_limit)
            except RegistryUnavailableError:
                raise
            except ReconcilerError as exc:
                blocked.add(model.name)
                result.failures.append(f"{model.name}: not registered: {exc}")
                continue
            result.done.append(f"{describe(change)} (version {number})")
            log.info("registered", extra={"model": model.name, "version": number})


def _gate_and_apply(
    registry: Registry,
    *,
    specs: Mapping[str, ModelSpec],
    plan: Plan,
    state: RegistryState,
    result: ApplyResult,
    blocked: set[str],
    keep_alive: Callable[[], None],
    time_limit: float,
) -> None:
    gated: set[tuple[str, str]] = set()
    for change in _gate_targets(plan.actionable):
        keep_alive()
        target = change.target
        if target.model in blocked or target.version is None or target.sha256 is None:
            continue
        if (target.model, target.version) in gated:
            continue
        gated.add((target.model, target.version))
        spec = next(v for v in specs[target.model].versions if v.sha256 == target.sha256)
        found = state.models[target.model].version(target.version)
        try:
            gate(
                registry,
                model=target.model,
                version=target.version,
                uri=found.source
                if found is not None and found.source
                else (registry.download_uri(target.model, target.version)),
                sha256=target.sha256,
                sample=spec.sample_input,
                time_limit=time_limit,
            )
        except RegistryUnavailableError:
            raise
        except ReconcilerError as exc:
            blocked.add(target.model)
            result.failures.append(str(exc))
    guarded = (Kind.STAGE, Kind.ALIAS, Kind.ROLLOUT, Kind.PROGRESSIVE)
    model_level = (Kind.MODEL_TAG, Kind.MODEL_DESCRIPTION, Kind.ROLLOUT)
    for change in sorted(plan.actionable, key=safe_order):
        keep_alive()
        target = change.target
        if target.kind in (Kind.MODEL, Kind.VERSION):
            continue  # registration happened before; a version still missing is reported
        if target.model in blocked and target.kind in guarded:
            continue
        if target.version is None and target.kind not in model_level:
            continue  # its version failed to register (reported)
        try:
            if target.kind is Kind.PROGRESSIVE:
                _progressive(registry, specs[target.model], change, state)
            else:
                execute(registry, change)
        except RegistryUnavailableError:
            raise
        except ReconcilerError as exc:
            blocked.add(target.model)
            result.failures.append(f"{describe(change)}: {exc}")
            continue
        result.done.append(describe(change))
        log.info("applied", extra={"change": describe(change)})


def _progressive(
    registry: Registry, model: ModelSpec, change: Change, state: RegistryState
) -> None:
    if change.action is Action.CREATE:
        start_progressive(registry, model, change, time.time())
    elif change.action is Action.DELETE:
        end_progressive(
            registry,
            state.models[model.name],
            f"cancelled: models.yaml declares v{change.before} as Production again",
        )
