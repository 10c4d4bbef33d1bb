"""The reconciler's errors: one root, subclasses that build their own message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from contracts.redact import mask_credentials


class ReconcilerError(Exception):
    """Root of every error the reconciler reports without a traceback (exit 1).

    Its text never holds a URI's credentials: MLflow's and requests' exception texts embed the
    tracking URI, user-info included, and subclasses quote them.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*(mask_credentials(a) if isinstance(a, str) else a for a in args))


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in models.yaml, located as ``file:line: field: message``."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class SpecError(ReconcilerError):
    """models.yaml is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in models.yaml:\n{lines}")


class RegistryUnavailableError(ReconcilerError):
    """MLflow did not answer (unreachable, 5xx, timeout) even after retries: temporary."""

    def __init__(self, operation: str, attempts: int, cause: BaseException) -> None:
        self.operation = operation
        self.attempts = attempts
        super().__init__(
            f"MLflow failed {operation} {attempts} time(s), giving up: {cause}. "
            "Check MLFLOW_TRACKING_URI and that the server is up, then run again "
            "(apply is idempotent: what was done is kept, the rest is redone)."
        )


class RegistryRequestError(ReconcilerError):
    """MLflow refused a request (4xx): permanent, retrying will not help."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        self.operation = operation
        super().__init__(f"MLflow refused {operation}: {cause}")


class ChecksumMismatchError(ReconcilerError):
    """The bytes of a source are not the ones models.yaml declares."""

    def __init__(self, source: str, declared: str, actual: str) -> None:
        from reconciler.sources import is_uri  # sources imports this module

        self.source = source
        self.actual = actual
        # A URI may name what the pull request's author cannot read (another bucket, another
        # team's run): its digest is not shown, or the error would be a sha256 oracle for it.
        has = "different bytes" if is_uri(source) else actual
        super().__init__(
            f"sha256 mismatch for {source}: models.yaml declares {declared}, the source has "
            f"{has}. Fix the sha256 in models.yaml (add-version computes it where the source "
            "can be read) or the source."
        )


class SourceError(ReconcilerError):
    """A source could not be read or fetched."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = mask_credentials(detail)
        super().__init__(f"cannot read source {source}: {detail}")


class GateError(ReconcilerError):
    """A version failed the promotion gate (download, sha256, onnxruntime load, inference)."""

    def __init__(self, model: str, version: str, step: str, detail: str) -> None:
        self.model = model
        self.version = version
        self.step = step
        super().__init__(
            f"{model} version {version} refused at the promotion gate ({step}): {detail}. "
            "It was not promoted; fix the model and register a new version."
        )


class LockedError(ReconcilerError):
    """Another apply holds the registry lock."""

    def __init__(self, holder: str, waited: float, lock_name: str) -> None:
        self.holder = holder
        super().__init__(
            f"another apply is running ({holder}); waited {waited:.0f}s for it. Run again when "
            f"it has finished. If it died, its lease expires by itself, or delete the registered "
            f"model {lock_name!r} in MLflow."
        )


class StalePlanError(ReconcilerError):
    """MLflow changed between ``plan --out`` and ``apply --plan``."""

    def __init__(self, added: int, removed: int) -> None:
        super().__init__(
            f"the saved plan is stale: MLflow changed since it was made ({added} change(s) "
            f"now needed that it does not list, {removed} listed no longer needed). Run plan "
            "again and review it."
        )


class PlanFileError(ReconcilerError):
    """The file given to ``apply --plan`` is not a plan saved by ``plan --out``."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"cannot use the saved plan {path}: {detail}. Save one with "
            "`plan --out FILE` and pass that file to `apply --plan FILE`."
        )


class SettingsError(ReconcilerError):
    """A RECONCILER_* (or MLflow) environment variable has a value the reconciler refuses."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid settings: " + "; ".join(self.problems))


class ApplyError(ReconcilerError):
    """Some changes failed; says which were done before the failure."""

    def __init__(self, done: Sequence[str], failures: Sequence[str]) -> None:
        self.done = tuple(done)
        self.failures = tuple(failures)
        done_text = "\n".join(f"  done: {item}" for item in done) or "  done: nothing"
        fail_text = "\n".join(f"  failed: {item}" for item in failures)
        super().__init__(f"apply did not complete:\n{fail_text}\n{done_text}")


class BreakingChangeError(ReconcilerError):
    """A version would become served with a signature that breaks clients of the served one."""

    def __init__(self, model: str, what: str, changes: Sequence[str], field: str) -> None:
        self.model = model
        self.changes = tuple(changes)
        super().__init__(
            f"{model}: refused {what}: its signature breaks existing clients ("
            + "; ".join(self.changes)
            + f"). Nothing of {model} was promoted or moved. If clients are ready, set "
            f"`{field}: <reason>` on that version in models.yaml and apply again."
        )


class BehaviourLimitError(ReconcilerError):
    """A version would become served answering past the model's behaviour limits."""

    def __init__(self, model: str, what: str, breaches: Sequence[str]) -> None:
        self.model = model
        self.breaches = tuple(breaches)
        super().__init__(
            f"{model}: refused {what}: it answers past the limits of "
            f"models.yaml ({'; '.join(self.breaches)}). Nothing of {model} was promoted or "
            "moved. Check the new version, or raise behaviour_limits in models.yaml."
        )
