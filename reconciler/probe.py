"""Read the signatures a plan's serving moves need: repository files in place, others downloaded."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Protocol

from contracts.redact import mask_credentials
from reconciler.errors import RegistryUnavailableError
from reconciler.gate import fetch, onnx_file_in
from reconciler.serving import SignatureKey, Signatures, VersionRef, needed, serving_moves
from reconciler.signature import Signature, read_signature
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
    """Reads each version's signature once per command (a plan, or the plans of one apply)."""

    def __init__(self, artifacts: Artifacts, desired: Desired) -> None:
        self.artifacts = artifacts
        self.desired = desired
        self._read: dict[SignatureKey, Signature | str] = {}

    def signatures(self, actual: RegistryState) -> Signatures:
        """The signatures of every version that becomes served, and of the ones served now.

        Raises:
            RegistryUnavailableError: MLflow did not answer (temporary: run again).
        """
        refs = needed(serving_moves(self.desired.file, actual))
        for key, ref in refs.items():
            if key not in self._read:
                self._read[key] = self._signature(ref)
        return {key: self._read[key] for key in refs}

    def _signature(self, ref: VersionRef) -> Signature | str:
        try:
            local = self.desired.local_path(ref.source) if ref.version is None else None
            if local is not None:  # a repository file, or a directory with external data
                if not local.exists():
                    return f"not found: {local}"
                return read_signature(onnx_file_in(local))
            uri = (
                ref.source
                if ref.version is None
                else self.artifacts.download_uri(ref.model, ref.version)
            )
            with tempfile.TemporaryDirectory(prefix="mlgitops-signature-") as scratch:
                return read_signature(fetch(self.artifacts, uri, Path(scratch)).onnx_file)
        except RegistryUnavailableError:
            raise
        except Exception as exc:  # a download or onnxruntime failure: shown in the plan
            log.warning(
                "cannot read a signature",
                extra={"model": ref.model, "version": ref.label(), "error": _short(exc)},
            )
            return _short(exc)
