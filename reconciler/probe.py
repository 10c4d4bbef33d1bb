"""Read what a plan's serving moves need: each version's signature (repository files in place,
others downloaded) and both versions' predictions on the becoming version's sample_input."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

from contracts.redact import mask_credentials
from reconciler.behaviour import BehaviourDiff, compare_predictions
from reconciler.errors import RegistryUnavailableError
from reconciler.gate import fetch, onnx_file_in, sample_feeds
from reconciler.serving import (
    Behaviours,
    Evidence,
    ServingMove,
    SignatureKey,
    VersionRef,
    needed,
    serving_moves,
)
from reconciler.signature import Signature, load_session, signature_of
from reconciler.spec import Desired
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
        self._behaviours: dict[tuple[SignatureKey, SignatureKey], BehaviourDiff | str] = {}

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
        found: dict[tuple[SignatureKey, SignatureKey], BehaviourDiff | str] = {}
        for move in moves:
            key = move.behaviour_key
            if key is None:
                continue
            if key not in self._behaviours:
                served, becoming = self._sessions[key[0]], self._sessions[key[1]]
                if isinstance(served, str) or isinstance(becoming, str):
                    continue  # the signature review says why
                self._behaviours[key] = _behaviour(served, becoming, move)
            found[key] = self._behaviours[key]
        return found

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


def _behaviour(served: Any, becoming: Any, move: ServingMove) -> BehaviourDiff | str:
    """Both versions run on the becoming version's sample_input; their outputs compared."""
    for which, session in (("new", becoming), ("served", served)):
        left_out = _not_in_sample(session, move)
        if left_out:
            return f"the sample_input gives no rows for the {which} version's {', '.join(left_out)}"
    try:
        after = _run(becoming, move)
    except Exception as exc:  # onnxruntime's own exception types
        return f"the new version cannot run its sample_input: {_short(exc)}"
    try:
        before = _run(served, move)
    except Exception as exc:
        return f"the served version cannot run this sample_input: {_short(exc)}"
    served_types = {arg.name: arg.type for arg in served.get_outputs()}
    comparable = [
        arg.name for arg in becoming.get_outputs() if served_types.get(arg.name) == arg.type
    ]
    return compare_predictions(before, after, comparable)


def _not_in_sample(session: Any, move: ServingMove) -> list[str]:
    """Inputs the sample leaves out (the gate feeds zeros there; a comparison would not mean
    anything)."""
    names = [arg.name for arg in session.get_inputs()]
    if isinstance(move.sample, dict):
        return [name for name in names if name not in move.sample]
    return names[1:]


def _run(session: Any, move: ServingMove) -> dict[str, Any]:
    names = [arg.name for arg in session.get_outputs()]
    return dict(zip(names, session.run(None, sample_feeds(session, move.sample)), strict=True))
