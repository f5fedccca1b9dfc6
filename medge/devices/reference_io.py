"""Reference inputs and FP32 outputs written into a bundle at compile time.

``reference/inputs.npz`` holds one array per model input and ``reference/outputs.npz`` one per
output, samples stacked on the batch axis, computed by ONNX Runtime (CPU, FP32) on the source
model.  On the device, ``medge compare BUNDLE --reference`` runs the bundle's artifact (the built
TensorRT engine, the IR, the .tflite…) on the stored inputs and checks it against the stored outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medge.common.bundle import REFERENCE_INPUTS, REFERENCE_OUTPUTS
from medge.quantize.parity_gate import load_inputs
from medge.runtimes import open_runtime

REFERENCE_SAMPLES = 4


def write_reference(out_dir: Path, onnx_path: Path, source: str | None, n: int = REFERENCE_SAMPLES) -> dict[str, Any]:
    """Write the reference inputs/outputs of the FP32 `onnx_path` into `out_dir`; returns their summary."""
    import onnxruntime as ort

    data = load_inputs(onnx_path, source, n=n)
    with open_runtime(onnx_path, "onnxruntime") as rt:
        in_names = [i.name for i in rt.inputs()]
        out_names = [o.name for o in rt.outputs()]
        feeds = [x if isinstance(x, dict) else {in_names[0]: x} for x in data.inputs]  # dicts: several inputs
        per_output: list[list[np.ndarray]] = [[] for _ in out_names]
        for feed in feeds:
            outputs = rt.infer(feed)
            for i, name in enumerate(out_names):
                per_output[i].append(np.asarray(outputs[name], dtype=np.float32))
    inputs_path, outputs_path = out_dir / REFERENCE_INPUTS, out_dir / REFERENCE_OUTPUTS
    inputs_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(inputs_path, **{name: np.concatenate([f[name] for f in feeds], axis=0) for name in in_names})
    np.savez(outputs_path, **{name: np.concatenate(ys, axis=0) for name, ys in zip(out_names, per_output)})
    return {"inputs": REFERENCE_INPUTS, "outputs": REFERENCE_OUTPUTS, "n": len(data.inputs),
            "source": data.info.get("source"), "computed_by": f"onnxruntime {ort.__version__} CPU fp32 on {onnx_path.name}"}
