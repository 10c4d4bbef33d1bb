"""The gate's child process: load one ONNX file in onnxruntime and run one inference.

Run as ``python -m reconciler.trial MODEL_FILE`` with the sample input as JSON on stdin
(``null``, a list of rows for the first input, or ``{input name: rows}``). It prints one JSON
line, ``{"outputs": N}`` (exit 0) or ``{"error": "..."}`` (exit 3). A child process, so the gate
can kill a load or an inference that never ends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contracts.tensors import numpy_dtype, sample_array

EXIT_REFUSED = 3


def feeds(inputs: Sequence[Any], sample: Any) -> dict[str, np.ndarray[Any, Any]]:
    """One inference's inputs: the declared sample where given, else each input's sample array
    (zeros, "" or False; symbolic dimensions 1). ``inputs`` are onnxruntime NodeArgs."""
    if isinstance(sample, dict):
        unknown = sorted(set(sample) - {spec.name for spec in inputs})
        if unknown:
            names = ", ".join(spec.name for spec in inputs)
            raise ValueError(f"sample_input names {unknown}, the model's inputs are: {names}")
    result: dict[str, np.ndarray[Any, Any]] = {}
    for index, spec in enumerate(inputs):
        dtype = numpy_dtype(spec.type)
        given = sample.get(spec.name) if isinstance(sample, dict) else None
        if sample is not None and not isinstance(sample, dict) and index == 0:
            given = sample
        if given is None:
            result[spec.name] = sample_array(spec.type, spec.shape)
        elif dtype.kind == "O":
            result[spec.name] = np.asarray(given, dtype=object)
        else:
            result[spec.name] = np.asarray(given).astype(dtype)
    return result


def run(model_file: Path, sample: Any) -> int:
    """Load ``model_file`` and run it once on ``sample``: the number of outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
    )
    inputs = session.get_inputs()
    try:
        outputs = session.run(None, feeds(inputs, sample))
    except Exception as exc:  # onnxruntime's own types
        defaulted = [spec.name for spec in inputs if not _given(sample, spec.name, inputs)]
        if not defaulted:
            raise
        raise ValueError(
            f'{error_text(exc)} (the gate fed zeros, "" or False to {", ".join(defaulted)}: '
            "declare sample_input with values the model accepts)"
        ) from exc
    if not outputs:
        raise ValueError("the model produced no output")
    return len(outputs)


def _given(sample: Any, name: str, inputs: Sequence[Any]) -> bool:
    if isinstance(sample, dict):
        return name in sample
    return sample is not None and bool(inputs) and inputs[0].name == name


def error_text(exc: BaseException, limit: int = 500) -> str:
    """``exc``'s message on one line (onnxruntime's run over several: the dimensions that
    differ are on the second), at most ``limit`` characters."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        sample = json.loads(sys.stdin.read() or "null")
        count = run(Path(args[0]), sample)
    except Exception as exc:  # onnxruntime raises its own types; UnsupportedTensorType, ValueError
        print(json.dumps({"error": error_text(exc)}))
        return EXIT_REFUSED
    print(json.dumps({"outputs": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
