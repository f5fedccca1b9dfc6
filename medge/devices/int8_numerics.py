"""Whose INT8 numerics the gate judges, and which ONNX Runtime scheme cannot saturate on this host.

A target profile's ``int8_numerics`` says where its INT8 arithmetic can be reproduced here:

* ``host-kernels``: the target runs the same kernels as this host (``local``, ``intel-cpu`` on x86),
  so the gate runs the artifact with its normal, fused kernels.
* ``ideal-simulation``: the target's kernels differ (ARM s8s8/u8s8 dot products on a Raspberry Pi,
  TensorRT on a Jetson), so the gate evaluates the Q/DQ graph in float with every fusion off
  (ORT ``ORT_DISABLE_ALL``: DequantizeLinear → float Conv/MatMul → QuantizeLinear), which is the
  ideal integer arithmetic without any kernel saturation.  ``medge compare BUNDLE --reference``
  on the device confirms it.

ORT's u8s8 kernels on x86 without VNNI (AVX2, AVX-512BW) multiply with ``vpmaddubsw``: the sum of
two u8×s8 products is saturated to int16 (255·127·2 = 64770 > 32767).  When the gate runs on such a
host's kernels, `host_ort_scheme` quantizes the weights to 7 bits (``reduce_range``: 255·63·2 ≤ 32767),
which is ORT's own advice; with VNNI (``vpdpbusd``, 32-bit accumulation) or on ARM the full 8-bit
range stays.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NUMERICS = ("host-kernels", "ideal-simulation")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CONFIRM = "run 'medge compare BUNDLE --reference' on the device to confirm the gate's numerics there"


@dataclass(frozen=True)
class Int8Numerics:
    """The numerics the INT8 gate used: a name from `NUMERICS`, a sentence, runtime options."""

    name: str
    detail: str
    runtime_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record for the report and the manifest."""
        return {**asdict(self), "confirm": CONFIRM}


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of this host (x86 ``flags`` or ARM ``Features``); empty when unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def host_ort_scheme(flags: frozenset[str] | set[str] | None = None, machine: str | None = None) -> dict[str, Any]:
    """The ORT static-INT8 scheme whose kernels cannot saturate on a host with `flags` (default: this one)."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    machine = (machine or platform.machine()).lower()
    x86 = machine in ("x86_64", "amd64", "i686", "i386")
    vnni = sorted(flags & VNNI_FLAGS)
    if x86 and not vnni:
        simd = "AVX-512BW" if "avx512bw" in flags else "AVX2" if "avx2" in flags else "SSE"
        return {"name": "u8s8-reduce-range", "activations": "uint8", "weights": "int7 (int8, reduce_range)",
                "reduce_range": True, "host_flags": simd + ", no VNNI",
                "reason": f"{simd} without VNNI: u8s8 pairs saturate int16 (vpmaddubsw); 7-bit weights cannot"}
    where = f"VNNI ({', '.join(vnni)})" if vnni else f"{machine} dot-product kernels"
    return {"name": "u8s8", "activations": "uint8", "weights": "int8", "reduce_range": False,
            "host_flags": where, "reason": f"{where} accumulate u8s8 in 32 bits: no saturation"}


def target_numerics(profile: Any) -> Int8Numerics:
    """Where `profile`'s INT8 numerics are reproduced on this host (its ``int8_numerics`` field)."""
    name = getattr(profile, "int8_numerics", "host-kernels")
    if name == "ideal-simulation":
        return Int8Numerics(name, "Q/DQ graph evaluated in float with fusions off (ONNX Runtime ORT_DISABLE_ALL): "
                                  f"ideal integer arithmetic of {profile.display_name}, no kernel saturation",
                            {"emulate_qdq": True})
    return Int8Numerics("host-kernels", f"this host's {profile.runtime} CPU kernels")


def int8_scheme(profile: Any, numerics: Int8Numerics) -> dict[str, Any]:
    """The ORT scheme for `profile`: chosen by this host's CPU flags when its kernels are the target's,
    the full 8-bit u8s8 when the target is judged on the ideal simulation (its kernels do not saturate)."""
    if numerics.name == "host-kernels":
        return host_ort_scheme()
    return {"name": "u8s8", "activations": "uint8", "weights": "int8", "reduce_range": False,
            "host_flags": None, "reason": f"{profile.display_name}'s kernels accumulate in 32 bits"}
