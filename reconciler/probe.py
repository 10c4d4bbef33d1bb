"""Read what a plan's serving moves need: each version's signature (repository files in place,
others downloaded) and both versions' predictions on the becoming version's sample_input and on
the model's evaluation file."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

from contracts.redact import mask_credentials
from reconciler.behaviour import BehaviourDiff, compare_predictions
from reconciler.errors import ReconcilerError, RegistryUnavailableError
from reconciler.evaluation import EvaluationFileError, read_rows
from reconciler.gate import fetch, onnx_file_in, sample_feeds
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
from reconciler.signature import Signature, load_session, signature_of
from reconciler.spec import Desired, SampleInput
from reconciler.state import RegistryState

log = logging.getLogger(__name__)


class Artifacts(Protocol):
    """The part of the Registry port a probe uses."""

    def download(self, uri: str, destination: Path) -> Path: ...

    def download_uri(self, name: str, version: str) -> str: ...


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return mask_credentials(text)[:300]


class SignatureProbe:
    """Loads each version once per command (a plan, or the plans of one apply).

    The onnxruntime sessions stay in memory for the command: a version's predictions are
    compared without a second download.
    """

    def __init__(self, artifacts: Artifacts, desired: Desired) -> None:
        self.artifacts = artifacts
        self.desired = desired
        self._sessions: dict[SignatureKey, Any | str] = {}
        self._behaviours: dict[BehaviourKey, BehaviourDiff | str] = {}
        self._evaluation: dict[str, SampleInput | str] = {}

    def evidence(self, actual: RegistryState) -> Evidence:
        """Signatures of every version that becomes served and of the ones served now, and
        both versions' predictions on the becoming version's sample_input.

        Raises:
            RegistryUnavailableError: MLflow did not answer (temporary: run again).
        """
        moves = serving_moves(self.desired.file, actual)
        refs = needed(moves)
        for key, ref in refs.items():
            if key not in self._sessions:
                self._sessions[key] = self._session(ref)
        signatures: dict[SignatureKey, Signature | str] = {}
        for key in refs:
            session = self._sessions[key]
            signatures[key] = session if isinstance(session, str) else signature_of(session)
        return Evidence(signatures, self._compare(moves))

    def _compare(self, moves: tuple[ServingMove, ...]) -> Behaviours:
        found: dict[BehaviourKey, BehaviourDiff | str] = {}
        for move in moves:
            for key in move.behaviour_keys():
                if key not in self._behaviours:
                    served, becoming = self._sessions[key[0]], self._sessions[key[1]]
                    if isinstance(served, str) or isinstance(becoming, str):
                        continue  # the signature review says why
                    rows = self._rows(move, key[2])
                    self._behaviours[key] = (
                        rows
                        if isinstance(rows, str)
                        else _behaviour(served, becoming, rows, key[2])
                    )
                found[key] = self._behaviours[key]
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

    def _session(self, ref: VersionRef) -> Any | str:
        try:
            local = self.desired.local_path(ref.source) if ref.version is None else None
            if local is not None:  # a repository file, or a directory with external data
                if not local.exists():
                    return f"not found: {local}"
                return load_session(onnx_file_in(local))
            uri = (
                ref.source
                if ref.version is None
                else self.artifacts.download_uri(ref.model, ref.version)
            )
            with tempfile.TemporaryDirectory(prefix="mlgitops-signature-") as scratch:
                return load_session(fetch(self.artifacts, uri, Path(scratch)).onnx_file)
        except RegistryUnavailableError:
            raise
        except Exception as exc:  # a download or onnxruntime failure: shown in the plan
            log.warning(
                "cannot read a signature",
                extra={"model": ref.model, "version": ref.label(), "error": _short(exc)},
            )
            return _short(exc)


def _behaviour(
    served: Any, becoming: Any, rows: SampleInput, rows_from: str
) -> BehaviourDiff | str:
    """Both versions run on the same rows; their outputs compared."""
    for which, session in (("new", becoming), ("served", served)):
        left_out = _left_out(session, rows)
        if left_out:
            return f"{rows_from} gives no rows for the {which} version's {', '.join(left_out)}"
    try:
        after = _run(becoming, rows)
    except Exception as exc:  # onnxruntime's own exception types
        return f"the new version cannot run {rows_from}: {_short(exc)}"
    try:
        before = _run(served, rows)
    except Exception as exc:
        return f"the served version cannot run {rows_from}: {_short(exc)}"
    served_types = {arg.name: arg.type for arg in served.get_outputs()}
    comparable = [
        arg.name for arg in becoming.get_outputs() if served_types.get(arg.name) == arg.type
    ]
    return compare_predictions(before, after, comparable)


def _left_out(session: Any, rows: SampleInput) -> list[str]:
    """Inputs the rows leave out (the gate feeds zeros there; a comparison would not mean
    anything)."""
    names = [arg.name for arg in session.get_inputs()]
    if isinstance(rows, dict):
        return [name for name in names if name not in rows]
    return names[1:]


def _run(session: Any, rows: SampleInput) -> dict[str, Any]:
    names = [arg.name for arg in session.get_outputs()]
    return dict(zip(names, session.run(None, sample_feeds(session, rows)), strict=True))
