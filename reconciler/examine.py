"""The probe's child process: one ONNX file's signature, and its outputs on sets of rows.

Run as ``python -m reconciler.examine MODEL_FILE`` with ``{rows_from: rows}`` as JSON on stdin
(rows as in sample_input). It prints one JSON line: ``{"signature": {...}, "outputs":
{rows_from: {output name: value} | {"error": "..."}}}`` (exit 0), or ``{"error": "..."}`` (exit
3) when the model does not load. A child process, as the gate's, so the probe can stop a load or
an inference that never ends and a model file cannot take the reconciler down.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reconciler.signature import load_session, signature_of
from reconciler.trial import EXIT_REFUSED, error_text, feeds


def _jsonable(value: Any) -> Any:
    """onnxruntime's outputs (arrays, ZipMap lists of mappings) as JSON values."""
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value


def examine(model_file: Path, row_sets: Mapping[str, Any]) -> dict[str, Any]:
    session = load_session(model_file)
    names = [arg.name for arg in session.get_outputs()]
    outputs: dict[str, Any] = {}
    for rows_from, rows in row_sets.items():
        try:
            values = session.run(None, feeds(session.get_inputs(), rows))
            outputs[rows_from] = {
                name: _jsonable(value) for name, value in zip(names, values, strict=True)
            }
        except Exception as exc:  # onnxruntime's own types; UnsupportedTensorType
            outputs[rows_from] = {"error": error_text(exc)}
    return {"signature": signature_of(session).to_dict(), "outputs": outputs}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        row_sets = json.loads(sys.stdin.read() or "{}")
        answer = examine(Path(args[0]), row_sets)
    except Exception as exc:  # the model does not load
        print(json.dumps({"error": error_text(exc)}))
        return EXIT_REFUSED
    print(json.dumps(answer, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
