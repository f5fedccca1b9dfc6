"""OpenVINO backend: NNCF post-training INT8 quantization (or FP16 compression) to OpenVINO IR.

The ONNX model goes through the same ``quant_pre_process`` step as the ORT backend, so the node
names the gate ranks and excludes are shared.  Excluded ONNX nodes become an NNCF
``IgnoredScope`` over the OpenVINO ops created from them (``/conv1/Conv`` →
``/conv1/Conv/WithoutBiases`` + ``/conv1/Conv``).  Sensitivity is ranked on an ORT QDQ proxy
quantized from the same calibration data.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medge.errors import UsageError
from medge.quantize.backends.base import QuantBackend, QuantOptions
from medge.quantize.backends.ort import OrtBackend
from medge.registry import import_optional


def _ov_names(model, exclude_nodes: list[str]) -> list[str]:
    """OpenVINO op names created from the ONNX nodes `exclude_nodes`."""
    wanted = set(exclude_nodes)
    names = []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in wanted or any(name.startswith(n + "/") for n in wanted):
            names.append(name)
    return names


class OpenVinoBackend(QuantBackend):
    """`nncf.quantize` on the OpenVINO model read from ONNX; writes .xml + .bin."""

    name = "openvino"
    artifact_suffix = ".xml"
    runtime = "openvino"
    reference_options = {"precision": "f32"}
    precisions = ("int8", "fp16")

    def prepare(self, onnx_in: Path, workdir: Path) -> Path:
        return OrtBackend().prepare(onnx_in, workdir)

    def supports_fallback(self, options: QuantOptions) -> bool:
        return options.precision == "int8"

    def quantize(self, onnx_in: Path, out: Path, calib: Iterable[dict[str, np.ndarray]],
                 exclude_nodes: list[str], options: QuantOptions) -> None:
        ov = import_optional("openvino", what="the openvino quantization backend")
        model = ov.Core().read_model(str(onnx_in))
        if options.precision == "fp16":
            ov.save_model(model, str(out), compress_to_fp16=True)
            return
        if options.calib_method != "minmax":
            raise UsageError("the openvino backend calibrates with NNCF's own range estimators; "
                             "use --calib-method minmax (or --backend ort for entropy/percentile)")
        nncf = import_optional("nncf", what="the openvino quantization backend")
        data = list(calib)
        if not data:
            raise UsageError("INT8 quantization needs calibration samples; pass --calib SOURCE")
        ignored = _ov_names(model, exclude_nodes)
        scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
        nncf.set_log_level(logging.WARNING)
        with contextlib.redirect_stdout(sys.stderr):  # NNCF progress bars must not mix with --json
            quantized = nncf.quantize(model, nncf.Dataset(data), subset_size=len(data), ignored_scope=scope,
                                      preset=nncf.QuantizationPreset.PERFORMANCE)
        ov.save_model(quantized, str(out), compress_to_fp16=False)

    def sensitivity_proxy(self, prepared: Path, first_artifact: Path, workdir: Path,
                          calib: list[dict[str, np.ndarray]], options: QuantOptions) -> Path:
        proxy = workdir / "ort_proxy.onnx"
        OrtBackend().quantize(prepared, proxy, calib, [], QuantOptions(precision="int8"))
        return proxy

    def artifact_files(self, out: Path) -> list[Path]:
        return [out, out.with_suffix(".bin")]

    def finalize(self, artifact: Path, metadata: dict[str, str]) -> None:
        """Store medge metadata in the IR's ``rt_info`` under ``medge``."""
        ov = import_optional("openvino", what="the openvino quantization backend")
        model = ov.Core().read_model(str(artifact))
        for key, value in sorted(metadata.items()):
            model.set_rt_info(value, ["medge", key.removeprefix("medge.")])
        tmp = artifact.with_name(artifact.stem + ".meta.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.replace(artifact)
        tmp.with_suffix(".bin").replace(artifact.with_suffix(".bin"))
