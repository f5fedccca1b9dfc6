"""The fork server that `run_cli` uses (`fixtures.cli_forkserver`) behaves like a fresh `medge` process:
same exit status and streams as the console script, the call's environment, PYTHONPATH and working
directory, a timeout that kills the call, and no leftovers from the warm parent on stderr."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from fixtures import cli_forkserver
from fixtures.cli_checks import medge_script

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    script = medge_script()
    if script is None:
        pytest.skip("no medge console script next to this Python")
    srv = cli_forkserver.ForkServer(script)
    yield srv
    srv.close()


def _fresh(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([medge_script(), *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--version"], ["no-such-command"], ["inspect", "missing.onnx"], ["zoo", "list"]])
def test_same_status_and_streams_as_the_console_script(server, tmp_path, argv):
    env = dict(os.environ, PYTHONHASHSEED="0")
    code, out, err = server.run(argv, env=env, cwd=tmp_path, timeout=120)
    fresh = _fresh(argv, env, tmp_path)
    assert (code, out, err) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_environment_pythonpath_and_cwd_are_the_calls(server, tmp_path):
    """A model module found only through the call's PYTHONPATH, an output path relative to the call's cwd."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(TESTS_DIR))
    code, _, err = server.run(["export", "fixtures.tiny_models:tiny_conv", "--input-shape", "1,1,32,32", "-o", "m.onnx"],
                              env=env, cwd=tmp_path, timeout=120)
    assert code == 0, err[-2000:]
    assert (tmp_path / "m.onnx").is_file()
    env.pop("PYTHONPATH")
    code, _, err = server.run(["export", "fixtures.tiny_models:tiny_conv", "--input-shape", "1,1,32,32", "-o", "n.onnx"],
                              env=env, cwd=tmp_path, timeout=120)
    assert code != 0 and "fixtures" in err and not (tmp_path / "n.onnx").exists()


def test_a_call_past_its_timeout_is_killed(server, tmp_path):
    (tmp_path / "sleepy.py").write_text("import time\n\ndef make():\n    time.sleep(600)\n")
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tmp_path))
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["export", "sleepy:make", "--input-shape", "1,1,8,8", "-o", "m.onnx"], env=env, cwd=tmp_path,
                   timeout=3)
    code, out, _ = server.run(["--version"], env=env, cwd=tmp_path, timeout=60)  # the server goes on serving
    assert code == 0 and out.startswith("medge ")
