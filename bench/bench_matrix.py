"""Bench `medge matrix run`: a 6-cell matrix (2 zoo models × intel-cpu, local, android-qualcomm-npu, INT8)
with --engine local --jobs 1, --jobs 2 and --engine ray; Ray's overhead per cell; resume time.

    python bench/bench_matrix.py [--models us-dct-vit,cxr-medvit-kan] [--out build/bench-matrix]

Ray's overhead per cell is the driver's wall time of a cell (submit → result) minus the cell's own
time (its process, measured inside the Ray task).  The resume run changes nothing, so it only
re-hashes the cells and reads results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.cli_checks import medge_command  # noqa: E402


def _run(matrix: Path, out: Path, *extra: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([*medge_command(), "matrix", "run", str(matrix), "-o", str(out), "--json", *extra],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not proc.stdout.strip().startswith("{"):
        sys.exit(f"matrix failed: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="us-dct-vit,cxr-medvit-kan")
    parser.add_argument("--targets", default="intel-cpu,local,android-qualcomm-npu")
    parser.add_argument("--out", default="build/bench-matrix")
    parser.add_argument("--skip", default="", help="comma list of runs to skip: jobs1, jobs2, ray")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    matrix = root / "matrix.yaml"
    matrix.write_text(f"models: [{args.models}]\ntargets: [{args.targets}]\nprecisions: [int8]\n"
                      "threads: 1\nruns: 20\nwarmup: 3\ntimeout: 1800\n")
    skip = set(args.skip.split(","))
    table = []
    runs = [("local --jobs 1", "jobs1", ["--jobs", "1"]), ("local --jobs 2", "jobs2", ["--jobs", "2"]),
            ("ray (embedded, 2 CPUs)", "ray", ["--engine", "ray", "--jobs", "2"])]
    last = None
    for label, tag, extra in runs:
        if tag in skip:
            continue
        wall, report = _run(matrix, root / tag, *extra)
        cell_s = [r["seconds"] for r in report["rows"]]
        overhead = [r["wall_s"] - r["seconds"] for r in report["rows"] if r.get("wall_s") is not None]
        table.append((label, wall, sum(cell_s), statistics.median(overhead) if overhead else None, report["counts"]))
        print(f"{label}: {wall:.1f} s wall, {report['counts']}", file=sys.stderr, flush=True)
        last = root / tag
    if last is not None:
        resume_wall, resumed = _run(matrix, last, "--resume")
        table.append(("--resume, nothing changed", resume_wall, 0.0, None, {"resumed": resumed["skipped"]}))
    print("| run | wall s | sum of cell s | median per-cell overhead s (wall − cell) | cells |")
    print("|---|---|---|---|---|")
    for label, wall, cells, overhead, counts in table:
        print(f"| {label} | {wall:.1f} | {cells:.1f} | {'-' if overhead is None else f'{overhead:.2f}'} | {counts} |")


if __name__ == "__main__":
    main()
