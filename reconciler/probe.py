"""Read what a plan's serving moves need: each version's signature (repository files in place,
others downloaded) and both versions' predictions on the becoming version's sample_input and on
the model's evaluation file."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from contracts.redact import mask_credentials
from reconciler.behaviour import BehaviourDiff, compare_predictions
from reconciler.child import ChildTimeoutError, run_child
from reconciler.errors import ReconcilerError, RegistryUnavailableError
from reconciler.evaluation import EvaluationFileError, read_rows
from reconciler.gate import DEFAULT_TIME_LIMIT, fetch, onnx_file_in
from reconciler.serving import (
    SAMPLE_ROWS,
    BehaviourKey,
    Behaviours,
    Evidence,
    ServingMove,
    SignatureKey,
    VersionRef,
    needed,
    serving_moves,
)
from reconciler.signature import Signature
from reconciler.spec import Desired, SampleInput
from reconciler.state import RegistryState
from reconciler.trial import error_text

log = logging.getLogger(__name__)


class Artifacts(Protocol):
    """The part of the Registry port a probe uses."""

    def download(self, uri: str, destination: Path) -> Path: ...

    def download_uri(self, name: str, version: str) -> str: ...


def _short(exc: BaseException) -> str:
    return mask_credentials(error_text(exc, 100_000))[:300]  # masked whole, then cut


@dataclass(frozen=True, slots=True)
class Examined:
    """One version as its child process saw it: signature, and outputs by set of rows."""

    signature: Signature
    outputs: Mapping[str, Mapping[str, Any]]
    """rows_from -> output name -> value (JSON), or ``{"error": "..."}``."""


class SignatureProbe:
    """Examines each version once per command (a plan, or the plans of one apply), each in a
    child process with a time limit, as the gate does: a model file from a pull request can
    neither hang nor crash the reconciler."""

    def __init__(
        self, artifacts: Artifacts, desired: Desired, *, time_limit: float = DEFAULT_TIME_LIMIT
    ) -> None:
        self.artifacts = artifacts
        self.desired = desired
        self.time_limit = time_limit
        self._examined: dict[SignatureKey, Examined | str] = {}
        self._evaluation: dict[str, SampleInput | str] = {}

    def evidence(self, actual: RegistryState) -> Evidence:
        """Signatures of every version that becomes served and of the ones served now, and
        both versions' predictions on the becoming version's sample_input and on the model's
        evaluation file.

        Raises:
            RegistryUnavailableError: MLflow did not answer (temporary: run again).
        """
        moves = serving_moves(self.desired.file, actual)
        row_sets: dict[SignatureKey, dict[str, SampleInput]] = {}
        unread: dict[BehaviourKey, BehaviourDiff | str] = {}
        for move in moves:
            for behaviour in move.behaviour_keys():
                rows = self._rows(move, behaviour[2])
                if isinstance(rows, str):
                    unread[behaviour] = rows
                    continue
                for version in behaviour[:2]:
                    row_sets.setdefault(version, {})[behaviour[2]] = rows
        signatures: dict[SignatureKey, Signature | str] = {}
        for key, ref in needed(moves).items():
            wanted = row_sets.get(key, {})
            found = self._examined.get(key)
            if found is None or (not isinstance(found, str) and set(wanted) - set(found.outputs)):
                self._examined[key] = self._examine(ref, wanted)
            examined = self._examined[key]
            signatures[key] = examined if isinstance(examined, str) else examined.signature
        return Evidence(signatures, {**self._compare(moves, row_sets), **unread})

    def _compare(
        self, moves: tuple[ServingMove, ...], row_sets: Mapping[SignatureKey, Mapping[str, Any]]
    ) -> Behaviours:
        found: dict[BehaviourKey, BehaviourDiff | str] = {}
        for move in moves:
            for key in move.behaviour_keys():
                served, becoming = self._examined.get(key[0]), self._examined.get(key[1])
                if key[2] not in row_sets.get(key[0], {}):
                    continue  # the rows could not be read (reported)
                if not isinstance(served, Examined) or not isinstance(becoming, Examined):
                    continue  # the signature review says why
                found[key] = _behaviour(served, becoming, row_sets[key[0]][key[2]], key[2])
        return found

    def _rows(self, move: ServingMove, rows_from: str) -> SampleInput | str:
        if rows_from == SAMPLE_ROWS:
            assert move.sample is not None
            return move.sample
        if rows_from not in self._evaluation:
            try:
                local = self.desired.local_path(rows_from)
                if local is None:
                    raise EvaluationFileError("give a path in this repository, not a URI")
                self._evaluation[rows_from] = read_rows(local)
            except (OSError, UnicodeDecodeError, ReconcilerError, EvaluationFileError) as exc:
                self._evaluation[rows_from] = f"cannot read {rows_from}: {_short(exc)}"
        return self._evaluation[rows_from]

    def _examine(self, ref: VersionRef, row_sets: Mapping[str, Any]) -> Examined | str:
        try:
            local = self.desired.local_path(ref.source) if ref.version is None else None
            if local is not None:  # a repository file, or a directory with external data
                if not local.exists():
                    return f"not found: {local}"
                return self._child(onnx_file_in(local), row_sets)
            uri = (
                ref.source
                if ref.version is None
                else self.artifacts.download_uri(ref.model, ref.version)
            )
            with tempfile.TemporaryDirectory(prefix="mlgitops-signature-") as scratch:
                return self._child(fetch(self.artifacts, uri, Path(scratch)).onnx_file, row_sets)
        except RegistryUnavailableError:
            raise
        except Exception as exc:  # a download failure: shown in the plan
            log.warning(
                "cannot read a signature",
                extra={"model": ref.model, "version": ref.label(), "error": _short(exc)},
            )
            return _short(exc)

    def _child(self, onnx_file: Path, row_sets: Mapping[str, Any]) -> Examined | str:
        try:
            result = run_child(
                "reconciler.examine", onnx_file, row_sets, time_limit=self.time_limit
            )
        except ChildTimeoutError:
            return (
                f"loading and running it did not finish within {self.time_limit:g}s "
                "(RECONCILER_GATE_TIMEOUT_SECONDS); stopped"
            )
        detail = result.failure("signature")
        if detail is not None:
            code = result.returncode
            killed = f" (killed by signal {-code})" if code < 0 else ""
            return mask_credentials(detail)[:300] + killed
        answer = result.answer
        return Examined(Signature.from_dict(answer["signature"]), answer["outputs"])


def _behaviour(
    served: Examined, becoming: Examined, rows: SampleInput, rows_from: str
) -> BehaviourDiff | str:
    """Both versions' outputs on the same rows, compared."""
    for which, examined in (("new", becoming), ("served", served)):
        left_out = _left_out(examined.signature, rows)
        if left_out:
            return f"{rows_from} gives no rows for the {which} version's {', '.join(left_out)}"
    after, before = becoming.outputs.get(rows_from, {}), served.outputs.get(rows_from, {})
    if "error" in after:
        return f"the new version cannot run {rows_from}: {after['error']}"
    if "error" in before:
        return f"the served version cannot run {rows_from}: {before['error']}"
    served_types = {tensor.name: tensor.type for tensor in served.signature.outputs}
    comparable = [
        tensor.name
        for tensor in becoming.signature.outputs
        if served_types.get(tensor.name) == tensor.type
    ]
    return compare_predictions(before, after, comparable)


def _left_out(signature: Signature, rows: SampleInput) -> list[str]:
    """Required inputs the rows leave out (zeros would go there; a comparison would not mean
    anything)."""
    names = [tensor.name for tensor in signature.inputs if not tensor.optional]
    if isinstance(rows, dict):
        return [name for name in names if name not in rows]
    return names[1:]
