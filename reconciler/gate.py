"""The promotion gate: fetch a version, check its sha256, load it in onnxruntime, run it once."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contracts.digest import sha256_file
from contracts.registry import ONNX_FILE_NAME
from reconciler.errors import GateError, ReconcilerError, SourceError
from reconciler.spec import SampleInput

log = logging.getLogger(__name__)

_ORT_TYPES: Mapping[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class Downloader(Protocol):
    def download(self, uri: str, destination: Path) -> Path: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """A version's ONNX file on local disk, with its facts."""

    onnx_file: Path
    sha256: str
    size: int


def onnx_file_in(path: Path) -> Path:
    """The ONNX file of a download: the file itself, ``model.onnx`` in a directory, or the file
    an MLflow-logged model's MLmodel names (``flavors.onnx.data``)."""
    if path.is_file():
        return path
    mlmodel = path / "MLmodel"
    if mlmodel.is_file():
        match = re.search(r"^\s+data:\s*(\S+)\s*$", mlmodel.read_text(), flags=re.MULTILINE)
        if match and (path / match.group(1)).is_file():
            return path / match.group(1)
    candidate = path / ONNX_FILE_NAME
    if candidate.is_file():
        return candidate
    found = sorted(path.glob("*.onnx"))
    if len(found) == 1:
        return found[0]
    raise SourceError(str(path), f"no {ONNX_FILE_NAME} in the downloaded directory")


def fetch(downloader: Downloader, uri: str, scratch: Path) -> Fetched:
    """Download ``uri`` (a file or a directory) into ``scratch``; locate and measure the ONNX."""
    try:
        local = downloader.download(uri, scratch)
    except ReconcilerError:
        raise
    except Exception as exc:  # each artifact store fails in its own way
        raise SourceError(uri, f"{type(exc).__name__}: {exc}") from exc
    onnx_file = onnx_file_in(local)
    return Fetched(onnx_file, sha256_file(onnx_file), onnx_file.stat().st_size)


def sample_feeds(session: Any, sample: SampleInput | None) -> dict[str, Any]:
    """Inputs for one inference: the declared sample, or zeros shaped by the model's inputs."""
    feeds: dict[str, Any] = {}
    inputs: Sequence[Any] = session.get_inputs()
    for index, spec in enumerate(inputs):
        dtype = _ORT_TYPES.get(spec.type, np.float32)
        given: Any = None
        if isinstance(sample, dict):
            given = sample.get(spec.name)
        elif sample is not None and index == 0:
            given = sample
        if given is not None:
            feeds[spec.name] = np.asarray(given, dtype=dtype)
        else:
            shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in spec.shape]
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
    return feeds


def check_onnx(onnx_file: Path, sample: SampleInput | None) -> None:
    """Load in onnxruntime and run one inference; raise ValueError-like errors on failure."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
    )
    outputs = session.run(None, sample_feeds(session, sample))
    if not outputs:
        raise ValueError("the model produced no output")


def gate(
    downloader: Downloader,
    *,
    model: str,
    version: str,
    uri: str,
    sha256: str,
    sample: SampleInput | None,
) -> Fetched:
    """Refuse (GateError) a version whose bytes, loading or inference are wrong."""
    with tempfile.TemporaryDirectory(prefix="mlgitops-gate-") as scratch:
        try:
            fetched = fetch(downloader, uri, Path(scratch))
        except ReconcilerError as exc:
            raise GateError(model, version, "download", str(exc)) from exc
        if fetched.sha256 != sha256:
            raise GateError(
                model,
                version,
                "sha256",
                f"the stored file has sha256 {fetched.sha256}, models.yaml declares {sha256}",
            )
        try:
            check_onnx(fetched.onnx_file, sample)
        except Exception as exc:  # onnxruntime raises its own exception types
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GateError(model, version, "onnxruntime", detail[:500]) from exc
    log.info("gate passed", extra={"model": model, "version": version, "sha256": sha256})
    return fetched
