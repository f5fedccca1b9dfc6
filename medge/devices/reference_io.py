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

from medge.manifest import REFERENCE_INPUTS, REFERENCE_OUTPUTS

REFERENCE_SAMPLES = 4


def write_reference(out_dir: Path, onnx_path: Path, source: str | None, n: int = REFERENCE_SAMPLES) -> dict[str, Any]:
    """Write the reference inputs/outputs of the FP32 `onnx_path` into `out_dir`; returns their summary."""
    import onnxruntime as ort

    from medge.devices.recipe_parity import load_inputs

    data = load_inputs(onnx_path, source, n=n)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    per_output: list[list[np.ndarray]] = [[] for _ in out_names]
    for x in data.inputs:
        for i, y in enumerate(sess.run(None, {in_name: x})):
            per_output[i].append(np.asarray(y, dtype=np.float32))
    inputs_path, outputs_path = out_dir / REFERENCE_INPUTS, out_dir / REFERENCE_OUTPUTS
    inputs_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(inputs_path, **{in_name: np.concatenate(data.inputs, axis=0)})
    np.savez(outputs_path, **{name: np.concatenate(ys, axis=0) for name, ys in zip(out_names, per_output)})
    return {"inputs": REFERENCE_INPUTS, "outputs": REFERENCE_OUTPUTS, "n": len(data.inputs),
            "source": data.info.get("source"), "computed_by": f"onnxruntime {ort.__version__} CPU fp32 on {onnx_path.name}"}
