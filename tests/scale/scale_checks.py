"""Helpers for the scale-out tests: run the real CLI, write matrix files, read results.jsonl, start real sshd."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from fixtures.cli_checks import run_medge

_spec = importlib.util.spec_from_file_location("profile_conftest", Path(__file__).parents[1] / "profile" / "conftest.py")
profile_conftest = importlib.util.module_from_spec(_spec)
sys.modules["profile_conftest"] = profile_conftest
_spec.loader.exec_module(profile_conftest)


def medge(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `medge` CLI in `cwd`."""
    return run_medge(list(args), cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


def write_matrix(path: Path, text: str) -> Path:
    """Write a matrix/farm YAML file and return its path."""
    path.write_text(text)
    return path


def rows(out: Path) -> list[dict]:
    """Every row of OUT/results.jsonl."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


class _Factory:
    """The bit of pytest's tmp_path_factory that the sshd fixture uses."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def mktemp(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(parents=True)
        return path


def start_sshd(folder: Path):
    """A real sshd on a free loopback port, as tests/profile/conftest.py starts it: (generator, server).
    `next(generator, None)` stops it."""
    gen = profile_conftest.sshd.__wrapped__(_Factory(folder))
    server = next(gen)
    return gen, server


def stop_sshd_daemon(server) -> None:
    """Stop the listening sshd (a device going away mid-run): new connections are refused from now on."""
    subprocess.run(["kill", str(int((server.key.parent / "sshd.pid").read_text()))], check=True)


def farm_yaml(servers, names, target: str = "local", timeout: float = 60) -> str:
    """A FARM.yaml with one device per server (all of `target`)."""
    first = servers[0]
    lines = [f"ssh_options: [UserKnownHostsFile={first.known_hosts}]", f"remote_medge: {first.medge}",
             f"timeout: {timeout}", "devices:"]
    for name, server in zip(names, servers):
        lines.append(f"  - {{name: {name}, target: {target}, address: '{server.url}', ssh_key: {server.key}, tags: [bench]}}")
    return "\n".join(lines) + "\n"
