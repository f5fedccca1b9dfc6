"""What `medge quantize` was asked to do: one typed config built by the CLI or by other commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS = ("int8", "fp16", "int8-dynamic")
CALIB_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantizeConfig:
    """Inputs of `medge.quantize.quantize_model`.

    `max_drop` None means no gate (the model is quantized and written without evaluation unless
    `eval_source` is given, in which case the metric is reported but never fails).
    `keep_output_head_fp32` keeps the nodes from the outputs back to the last compute node in FP32
    (INT8 only).  `max_fallback_steps` bounds the number of attempts of each fallback stage after
    the first try: with `int16_fallback` the most sensitive activations first go to 16 bits (weights
    stay int8), then nodes go back to FP32.
    `parity_limits` (INT8 without a metric gate; see `medge.quantize.parity_gate.int8_limits`) judges
    every attempt by its parity with FP32 on the calibration samples, so a parity failure runs the
    same fallback ladder.  `runtime_options` run those checks on the target's numerics
    (``emulate_qdq``: the ideal integer simulation), recorded as `numerics`.
    """

    model: Path
    output: Path
    precision: str = "int8"
    backend: str = "ort"
    calib_source: str | None = None
    calib_size: int = 300
    calib_method: str = "minmax"
    eval_source: str | None = None
    eval_size: int = 300
    metric: str | None = None
    max_drop: float | None = None
    allow_overlap: bool = False
    keep_io_fp32: bool = True
    trt_compatible: bool = False
    keep_output_head_fp32: bool = True
    max_fallback_steps: int = 6
    int16_fallback: bool = True
    n_boot: int = 1000
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    parity_limits: dict[str, float | None] | None = None
    runtime_options: dict[str, Any] = field(default_factory=dict)
    numerics: dict[str, Any] | None = None
