"""`medge matrix run MATRIX.yaml -o OUT`: build every model × target × precision cell, locally or on Ray."""

from __future__ import annotations

import argparse
from pathlib import Path

from medge.common.errors import UsageError

HELP = "build a models × targets × precisions matrix (local processes or Ray), resumable, with one result table"
EXAMPLE = ["medge matrix run release.yaml -o build/release --jobs 2",
           "medge matrix run release.yaml -o build/release --engine ray --address 10.0.0.5:6379 --resume",
           "medge matrix run release.yaml -o build/release --farm lab.yaml   # profile on the lab's devices"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("action", choices=["run"], help="'run': run the matrix")
    parser.add_argument("matrix", help="MATRIX.yaml: models, targets, precisions, prune, exclude, timeout, retries")
    parser.add_argument("-o", "--output", required=True, help="results folder (cells/, results.jsonl, results.md/json/png)")
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: child processes (default); ray: one Ray task per cell (pip install 'medge[ray]')")
    parser.add_argument("--address", help="--engine ray: join this cluster (default: start an embedded local Ray)")
    parser.add_argument("--jobs", type=int, help="cells at a time (default 1 locally; the cluster's CPUs on Ray)")
    parser.add_argument("--resume", action="store_true",
                        help="continue OUT: skip cells whose last row is ok with the same cell key")
    parser.add_argument("--only", action="append", metavar="KEY=VALUE",
                        help="run only cells with model/target/precision/prune = VALUE (repeatable)")
    parser.add_argument("--farm", metavar="FARM.yaml",
                        help="profile the cells of the farm's targets on its SSH devices (leased, one job per device, "
                             "work moved off a failed device) instead of on the host or a Ray resource")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.scale.matrix import run_matrix
    from medge.scale.spec import load_matrix, parse_only

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1 (got {args.jobs})")
    if args.address and args.engine != "ray":
        raise UsageError("--address needs --engine ray")
    spec = load_matrix(args.matrix, parse_only(args.only))
    farm = None
    if args.farm:
        from medge.scale.farm import load_farm

        farm = load_farm(args.farm)
    return run_matrix(spec, Path(args.output), engine=args.engine, jobs=args.jobs, address=args.address,
                      resume=args.resume, farm=farm)
