"""`medge doctor`: what this machine (or a device over SSH) has, and which apps and targets it can run.

Everything is read without side effects: the platform and CPU flags from ``/proc/cpuinfo``, each
runtime's version and providers/devices (importing it only when it is installed), cv2's build
information, serial ports and V4L2 devices from ``/dev``, the Jetson facts (L4T release, power
mode, ``tegrastats``) and free disk.  Apps and compile targets are then marked ready or not, with
what is missing and how to install it.
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medge.common.reports import Report, human_bytes
from medge import __version__
from medge.common.errors import MissingDependencyError
from medge.devices import TARGETS

# CPU flags that matter for int8/bf16 kernels, by /proc/cpuinfo name.
_X86_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
              "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}
_ARM_FLAGS = {"asimd": "NEON", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "SVE", "bf16": "BF16"}
# What each app imports beyond the core, and the extra that installs it.
_APP_NEEDS = {
    "ultrasound": (("cv2", "opencv"),),
    "ecg": (("serial", "apps"), ("cobs", "apps"), ("wfdb", "apps"), ("matplotlib", "apps")),
    "xray": (("pydicom", "apps"), ("pynetdicom", "apps"), ("highdicom", "apps"), ("pylibjpeg", "apps")),
}
# The module each runtime is imported as, and the extra that installs it.
_RUNTIME_MODULES = {"onnxruntime": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino"),
                    "litert": ("ai_edge_litert", "litert"), "tensorrt": ("tensorrt", "tensorrt")}


def _version(module: str) -> str | None:
    """The installed version of `module` (distribution metadata first: JetPack's apt builds have none)."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception:  # noqa: BLE001 - a broken install is reported as such, never raised
        return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _command(args: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_facts() -> dict[str, Any]:
    """Model name, usable cores and the int8/bf16-relevant flags of this CPU."""
    info = _read("/proc/cpuinfo")
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
    names = _ARM_FLAGS if platform.machine() in ("aarch64", "arm64") else _X86_FLAGS
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": os.cpu_count(), "usable_cores": usable,
            "flags": [label for flag, label in names.items() if flag in flags]}


def _ort() -> dict[str, Any]:
    import onnxruntime as ort

    return {"providers": list(ort.get_available_providers())}


def _openvino() -> dict[str, Any]:
    import openvino as ov

    return {"devices": list(ov.Core().available_devices)}


def _tensorrt() -> dict[str, Any]:
    return {"cuda": cuda_version()}


def _litert() -> dict[str, Any]:
    return {"delegates": ["xnnpack (CPU)"]}  # the Python interpreter runs CPU kernels only


def cuda_version() -> str | None:
    """The CUDA toolkit version (``/usr/local/cuda``) or the driver's (``nvidia-smi``), else None."""
    text = _read("/usr/local/cuda/version.json")
    match = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', text) or \
        re.search(r"CUDA Version\s*([\d.]+)", _read("/usr/local/cuda/version.txt"))
    if match:
        return match.group(1)
    smi = _command(["nvidia-smi"]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    return match.group(1) if match else None


def runtime_facts() -> dict[str, dict[str, Any]]:
    """Each runtime: installed or not, version, providers/devices, and the extra that installs it."""
    probes = {"onnxruntime": _ort, "openvino": _openvino, "litert": _litert, "tensorrt": _tensorrt}
    facts: dict[str, dict[str, Any]] = {}
    for name, (module, extra) in _RUNTIME_MODULES.items():
        entry: dict[str, Any] = {"installed": _installed(module), "extra": extra}
        if entry["installed"]:
            entry["version"] = _version(module)
            try:
                entry.update(probes[name]())
            except Exception as exc:  # noqa: BLE001 - installed but broken: say so, go on
                entry["installed"], entry["error"] = False, f"{type(exc).__name__}: {exc}".splitlines()[0]
        facts[name] = entry
    if _installed("torch"):
        facts["torch"] = {"installed": True, "version": _version("torch"), "extra": "toolchain"}
    else:
        facts["torch"] = {"installed": False, "extra": "toolchain"}
    return facts


def opencv_facts() -> dict[str, Any]:
    """cv2's version and whether its build has GStreamer and V4L2."""
    if not _installed("cv2"):
        return {"installed": False}
    try:
        import cv2

        build = cv2.getBuildInformation()
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}

    def has(label: str) -> bool:
        match = re.search(rf"^\s*{label}:\s*(\S+)", build, re.MULTILINE)
        return bool(match) and match.group(1).upper().startswith("YES")

    return {"installed": True, "version": cv2.__version__, "gstreamer": has("GStreamer"), "v4l2": has("v4l/v4l2")}


def hardware_facts() -> dict[str, Any]:
    """Serial ports, V4L2 devices, Jetson facts and free disk."""
    serial = sorted(p for pattern in ("ttyUSB*", "ttyACM*", "ttyTHS*", "ttyAMA*") for p in glob.glob(f"/dev/{pattern}"))
    tegra = _read("/etc/nv_tegra_release").splitlines()
    jetson: dict[str, Any] = {"l4t": tegra[0].lstrip("# ").strip() if tegra else None}
    if jetson["l4t"]:
        mode = _command(["nvpmodel", "-q"])
        jetson["power_mode"] = mode.splitlines()[0].split(":", 1)[-1].strip() if mode else None
        jetson["tegrastats"] = shutil.which("tegrastats") is not None
    disk = shutil.disk_usage(Path.home() if Path.home().exists() else Path("/"))
    return {"serial_ports": serial, "video_devices": sorted(glob.glob("/dev/video*")), "jetson": jetson,
            "disk_free_bytes": disk.free, "disk_path": str(Path.home())}


def app_readiness(runtimes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each app: ready or not, and what is missing (with the pip extra or JetPack package)."""
    any_runtime = any(r["installed"] for k, r in runtimes.items() if k != "torch")
    result = {}
    for app, needs in _APP_NEEDS.items():
        missing = [str(MissingDependencyError(module, extra)) for module, extra in needs if not _installed(module)]
        if not any_runtime:
            missing.append(str(MissingDependencyError("onnxruntime", "onnxruntime", what="any model")))
        result[app] = {"ready": not missing, "missing": missing}
    return result


def target_readiness(runtimes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each compile target: can its bundle run on this machine, and if not, what is missing."""
    arch = platform.machine()
    result = {}
    for name in TARGETS.names():
        target = TARGETS.get(name)
        runtime = runtimes.get(target.runtime, {"installed": False, "extra": target.runtime})
        missing = []
        if not runtime["installed"]:
            missing.append(str(MissingDependencyError(_RUNTIME_MODULES[target.runtime][0], runtime["extra"])))
        if target.family == "android":
            missing.append("runs on an Android phone (LiteRT delegate), not here")
        elif target.family == "jetson" and not (runtime["installed"] and runtime.get("cuda")):
            missing.append("needs an NVIDIA GPU with CUDA (a Jetson)")
        elif target.family == "intel" and runtime["installed"]:
            devices = runtime.get("devices") or []
            if not any(str(d).upper().startswith(target.runtime_device.upper()) for d in devices):
                missing.append(f"OpenVINO sees no {target.runtime_device} here (devices: {', '.join(devices) or 'none'})")
        elif target.family == "raspberrypi" and arch not in ("aarch64", "arm64"):
            missing.append(f"built for aarch64 (this is {arch})")
        if target.family == "intel" and arch not in ("x86_64", "AMD64"):
            missing.append(f"built for x86-64 (this is {arch})")
        result[name] = {"ready": not missing, "runtime": target.runtime, "missing": missing}
    return result


@dataclass
class DoctorReport(Report):
    """What a machine has and what it can run."""

    title = "medge doctor"
    host: str = ""
    python: str = ""
    os: str = ""
    arch: str = ""
    medge: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)
    opencv: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    remote: str | None = None

    def table_rows(self) -> list[tuple[str, str]]:
        """One row per fact; apps and targets as ready / what is missing."""
        rows = [("host", f"{self.host}" + (f" ({self.remote})" if self.remote else "")),
                ("python", self.python), ("os", f"{self.os} {self.arch}"), ("medge", self.medge),
                ("cpu", f"{self.cpu.get('model')}, {self.cpu.get('usable_cores')}/{self.cpu.get('cores')} cores, "
                        f"flags: {', '.join(self.cpu.get('flags') or []) or 'none that matter'}")]
        for name, r in self.runtimes.items():
            if not r.get("installed"):
                rows.append((f"runtime {name}", r.get("error") or f"not installed (pip install 'medge[{r['extra']}]')"))
                continue
            extra = r.get("providers") or r.get("devices") or r.get("delegates")
            detail = f"{r.get('version')}" + (f": {', '.join(extra)}" if extra else "")
            if name == "tensorrt":
                detail += f", CUDA {r.get('cuda') or 'not found'}"
            rows.append((f"runtime {name}", detail))
        cv = self.opencv
        rows.append(("opencv", f"{cv['version']}, GStreamer {'yes' if cv.get('gstreamer') else 'no'}, "
                               f"V4L2 {'yes' if cv.get('v4l2') else 'no'}" if cv.get("installed") else "not installed"))
        hw = self.hardware
        rows.append(("serial ports", ", ".join(hw.get("serial_ports") or []) or "none"))
        rows.append(("video devices", ", ".join(hw.get("video_devices") or []) or "none"))
        jetson = hw.get("jetson") or {}
        rows.append(("jetson", f"{jetson['l4t']}, power mode {jetson.get('power_mode') or '?'}, tegrastats "
                               f"{'yes' if jetson.get('tegrastats') else 'no'}" if jetson.get("l4t") else "no"))
        rows.append(("disk free", f"{human_bytes(hw.get('disk_free_bytes'))} ({hw.get('disk_path')})"))
        for kind, entries in (("app", self.apps), ("target", self.targets)):
            for name, r in entries.items():
                rows.append((f"{kind} {name}", "ready" if r["ready"] else "not ready: " + "; ".join(r["missing"])))
        return rows


def run_doctor() -> DoctorReport:
    """Collect every fact about this machine."""
    runtimes = runtime_facts()
    return DoctorReport(host=platform.node(), python=f"{platform.python_version()} ({sys.executable})",
                        os=f"{platform.system()} {platform.release()}", arch=platform.machine(), medge=__version__,
                        cpu=cpu_facts(), runtimes=runtimes, opencv=opencv_facts(), hardware=hardware_facts(),
                        apps=app_readiness(runtimes), targets=target_readiness(runtimes))


def report_from_dict(data: dict[str, Any], remote: str) -> DoctorReport:
    """A `DoctorReport` from a device's JSON (``medge doctor --json`` there)."""
    names = set(DoctorReport.__dataclass_fields__)
    report = DoctorReport(**{k: v for k, v in data.items() if k in names})
    report.remote = remote
    return report
