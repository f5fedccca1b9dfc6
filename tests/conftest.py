"""Shared fixtures: run the installed `medge` console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    """Exit code, captured streams and (when --report was given) the parsed JSON report."""

    returncode: int
    stdout: str
    stderr: str
    report: dict | None = None


def _medge_command() -> list[str]:
    from fixtures.cli_checks import medge_command

    return medge_command()  # the script next to sys.executable first, then PATH


@pytest.fixture(scope="session")
def _fork_server():
    """The warm parent that `run_cli` forks the CLI from (`fixtures.cli_forkserver`); None when turned
    off or when there is no console script (then each call is a plain subprocess)."""
    from fixtures import cli_forkserver
    from fixtures.cli_checks import medge_script

    script = medge_script()
    if not cli_forkserver.enabled() or script is None:
        return None
    return cli_forkserver.shared(script)


def pytest_sessionfinish(session, exitstatus):
    """Stop this process's CLI fork server (started by `run_cli` or `spawn_medge`), if any."""
    from fixtures import cli_forkserver

    cli_forkserver.close_shared()


@pytest.fixture
def run_cli(tmp_path, _fork_server):
    """Call the real `medge` CLI in a new process; with report=True a --report path is added and parsed."""

    def run(*args: str, report: bool = False, timeout: float = 600, cwd: Path | None = None) -> CliResult:
        cmd = _medge_command() + [str(a) for a in args]
        report_path = None
        if report:
            report_path = tmp_path / f"report-{len(list(tmp_path.glob('report-*.json')))}.json"
            cmd += ["--report", str(report_path)]
        env = dict(os.environ, PYTHONHASHSEED="0")
        if _fork_server is not None:
            code, out, err = _fork_server.run(cmd[1:], env=env, cwd=Path(cwd or tmp_path), timeout=timeout)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or tmp_path, env=env)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        data = json.loads(report_path.read_text()) if report_path and report_path.exists() else None
        return CliResult(code, out, err, data)

    return run


LONG_TIMEOUT_S = 900  # slow and zoo_npu tests; everything else has pyproject's 120 s


def pytest_collection_modifyitems(config, items):
    """Slow and zoo_npu tests without their own timeout marker get `LONG_TIMEOUT_S`; modules run
    longest first (`fixtures.durations`), so that no long module is left for the end of the run."""
    from fixtures.durations import longest_modules_first

    longest_modules_first(items)
    for item in items:
        if (item.get_closest_marker("slow") or item.get_closest_marker("zoo_npu")) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


@pytest.fixture
def cli_in_process(tmp_path, monkeypatch):
    """`medge_cli.main` in this process, for help and usage-error tests (no start-up cost); the same
    `CliResult` as `run_cli`. Real end-to-end paths keep `run_cli` (a subprocess)."""
    import contextlib
    import io

    import medge_cli

    def run(*args: str, report: bool = False) -> CliResult:
        monkeypatch.chdir(tmp_path)
        argv = [str(a) for a in args]
        report_path = None
        if report:
            report_path = tmp_path / f"report-{len(list(tmp_path.glob('report-*.json')))}.json"
            argv += ["--report", str(report_path)]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = medge_cli.main(argv)
            except SystemExit as exc:  # argparse's --help
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        data = json.loads(report_path.read_text()) if report_path and report_path.exists() else None
        return CliResult(code, out.getvalue(), err.getvalue(), data)

    return run


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory):
    """`zoo_onnx(name, dynamic_batch=True) -> Path`: a zoo model exported once per test run (shared
    by the xdist workers).

    Uses the real `medge.export.export_onnx` (parity-checked, metadata embedded), so other suites
    can reuse exported models without paying for the export again.
    """
    from fixtures.shared_build import build_once

    def get(name: str, dynamic_batch: bool = True) -> Path:
        stem = f"{name}{'-dynamic' if dynamic_batch else ''}"

        def export(folder: Path) -> None:
            from medge.export import export_onnx

            export_onnx(name, folder / f"{stem}.onnx", dynamic_batch=dynamic_batch)

        return build_once(tmp_path_factory, f"zoo_onnx-{stem}", export) / f"{stem}.onnx"

    return get
