"""Run one matrix cell: `medge build` (or `medge compile` + `medge profile` for an .onnx model) as
child processes with capped threads, then read their JSON reports into one result row.

``python -m medge.scale.cell CELL.json RESULT.json`` is the cell's own process: the local engine
starts it in a new process group (a timeout or Ctrl-C ends the whole group) and a Ray task starts it
the same way, so every build runs in a fresh process that dies with whoever started it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from medge.common.fileio import write_json_atomic

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def medge_cli() -> list[str]:
    """How to start the `medge` CLI: the console script next to this Python, else ``python medge_cli.py``."""
    import shutil
    import sysconfig

    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        script = folder / "medge"
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    found = shutil.which("medge")
    return [found] if found else [sys.executable, "-m", "medge_cli"]


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the process that started it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cell_env(threads: int) -> dict[str, str]:
    """This environment with every thread pool capped at `threads`."""
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_VARS})
    return env


def step_commands(cell: dict[str, Any], cell_dir: Path) -> list[tuple[str, list[str]]]:
    """(step name, argv) of the child processes that make up the cell."""
    cli = medge_cli()
    bundle = str(cell_dir / "bundle")
    data = [arg for key in ("calib", "eval") if cell.get(key) for arg in (f"--{key}", cell[key])]
    if cell.get("max_drop") is not None:
        data += ["--max-drop", str(cell["max_drop"])]
    profiling = ["--runs", str(cell["runs"]), "--warmup", str(cell["warmup"]), "--threads", str(cell["threads"])]
    if str(cell["source"]).endswith(".onnx"):
        steps = [("compile", [*cli, "compile", cell["source"], "--target", cell["target"], "--precision",
                              cell["precision"], "-o", bundle, "--force", *data,
                              "--report", str(cell_dir / "compile.json")])]
        if not cell.get("device_bound") and not cell.get("on_farm"):  # else profiled on the device
            steps.append(("profile", [*cli, "profile", bundle, *profiling, "--report", str(cell_dir / "profile.json")]))
        return steps
    argv = [*cli, "build", cell["source"], "--target", cell["target"], "--precision", cell["precision"], "-o", bundle,
            "--force", *data, *profiling, "--report", str(cell_dir / "build.json")]
    if cell.get("kwargs"):
        argv += ["--model-kwargs", json.dumps(cell["kwargs"])]
    if cell.get("weights"):
        argv += ["--weights", cell["weights"]]
    if cell.get("input_shape"):
        argv += ["--input-shape", cell["input_shape"]]
    if cell.get("prune", "none") != "none":
        argv += ["--prune", cell["prune"]]
    return [("build", argv)]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _gate_metric(compile_report: dict[str, Any]) -> dict[str, Any]:
    gate = compile_report.get("gate") or {}
    metric = gate.get("metric") if isinstance(gate.get("metric"), dict) else gate
    out = {k: metric.get(k) for k in ("name", "reference", "quantized", "drop", "max_drop") if metric.get(k) is not None}
    if gate.get("passed") is not None:
        out["passed"] = gate["passed"]
    return out


def _status(ok: bool, error: str, metric: dict[str, Any]) -> str:
    low = error.lower()
    if ok:
        return "ok"
    if metric.get("passed") is False or "gate" in low:
        return "gate_failed"
    if "does not support" in low or "unsupported" in low or "not supported" in low:
        return "unsupported"
    return "build_failed"


def summarize(cell: dict[str, Any], cell_dir: Path, codes: dict[str, int], stderr_tail: str) -> dict[str, Any]:
    """The result fields of a finished cell, from its reports (status, metric, sizes, latency, steps)."""
    build = _read(cell_dir / "build.json")
    compiled = build.get("compile") or _read(cell_dir / "compile.json")
    profiles = build.get("profiles") or ([_read(cell_dir / "profile.json")] if (cell_dir / "profile.json").exists() else [])
    bundle_profile = next((p for p in reversed(profiles) if "bundle" in str(p.get("artifact", ""))), {})
    fp32_profile = next((p for p in profiles if p is not bundle_profile), {})
    steps = {s["step"]: s.get("seconds") for s in build.get("steps", [])} or \
        {name: (_read(cell_dir / f"{name}.json").get("seconds")) for name in codes}
    error = build.get("error") or compiled.get("error") or ""
    ok = all(code == 0 for code in codes.values())
    if not ok and not error:
        lines = [ln for ln in stderr_tail.splitlines() if ln.startswith("medge: error:")]
        error = lines[-1][len("medge: error: "):] if lines else (stderr_tail.strip().splitlines() or ["failed"])[-1]
    metric = _gate_metric(compiled)
    latency = bundle_profile.get("latency_ms") or {}
    fp32_p50 = (fp32_profile.get("latency_ms") or {}).get("p50")
    return {
        "status": _status(ok, error, metric),
        "metric": metric,
        "size_bytes": {"fp32": (build.get("export") or {}).get("size_bytes"),
                       "bundle": sum((compiled.get("files") or {}).values()) or None},
        "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99"),
        "latency_ratio": round(fp32_p50 / latency["p50"], 3) if fp32_p50 and latency.get("p50") else None,
        "steps": steps,
        "error": error[:500],
        "paths": {"bundle": str(cell_dir / "bundle"), "report": str(cell_dir / ("build.json" if build else "compile.json"))},
    }


def run_steps(cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
    """Run the cell's child processes in order (stop at the first failure); returns `summarize`'s fields."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    tail = ""
    with open(cell_dir / "log.txt", "w") as log:
        for name, argv in step_commands(cell, cell_dir):
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.PIPE, text=True, env=cell_env(cell["threads"]),
                                  preexec_fn=die_with_parent)
            log.write(proc.stderr)
            codes[name], tail = proc.returncode, proc.stderr[-4000:]
            if proc.returncode != 0:
                break
    return summarize(cell, cell_dir, codes, tail)


def start_cell(cell: dict[str, Any], cell_dir: Path) -> subprocess.Popen:
    """Start ``python -m medge.scale.cell`` for `cell` in its own process group; its result lands in result.json."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    (cell_dir / "result.json").unlink(missing_ok=True)
    write_json_atomic(cell_dir / "cell.json", cell)
    return subprocess.Popen([sys.executable, "-m", "medge.scale.cell", str(cell_dir / "cell.json"),
                             str(cell_dir / "result.json")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the cell's process group, then SIGKILL what is left after 3 s."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the runner is gone; its builds may linger a moment
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def finished_result(cell_dir: Path, code: int | None) -> dict[str, Any]:
    """What the cell's process wrote, or a build_failed result when it wrote nothing."""
    data = _read(cell_dir / "result.json")
    return data or {"status": "build_failed", "error": f"the cell's process ended with code {code} and no result"}


def run_cell_blocking(cell: dict[str, Any], cell_dir: Path, timeout_s: float) -> dict[str, Any]:
    """Start the cell's process, wait up to `timeout_s`, end it on timeout; the result (status may be timeout)."""
    t0 = time.monotonic()
    proc = start_cell(cell, cell_dir)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        end_group(proc)
        return {"status": "timeout", "error": f"no result after {timeout_s:g} s (timeout)",
                "seconds": round(time.monotonic() - t0, 3)}
    except BaseException:
        end_group(proc)
        raise
    result = finished_result(cell_dir, code)
    result["seconds"] = round(time.monotonic() - t0, 3)
    return result


def main(argv: list[str]) -> int:
    """Entry point of the cell's own process: CELL.json → RESULT.json."""
    cell = json.loads(Path(argv[0]).read_text())
    result = run_steps(cell, Path(argv[0]).parent)
    write_json_atomic(argv[1], result)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
