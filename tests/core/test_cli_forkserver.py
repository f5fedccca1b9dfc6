"""The fork server that `run_cli` uses (`fixtures.cli_forkserver`) behaves like a fresh `medge` process:
same exit status and streams as the console script, the call's environment, PYTHONPATH and working
directory, a timeout that kills the call, and no leftovers from the warm parent on stderr; `popen`
behaves like `subprocess.Popen` for the long-running apps the tests start."""

from __future__ import annotations

import os
import signal
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


def test_popen_pipes_signals_and_exit_status_as_subprocess_popen(server, tmp_path):
    """A long-running call started with `popen`: its stdout pipe reads line by line while it runs,
    SIGINT stops it as it stops a fresh process (KeyboardInterrupt, status 130), `communicate` returns the
    rest of both pipes, and the pipes see their end of file (no copy of the child's ends stays open)."""
    (tmp_path / "talky.py").write_text(
        "import sys, time\n\ndef make():\n    print('started', flush=True)\n    print('to stderr', file=sys.stderr,"
        " flush=True)\n    time.sleep(600)\n")
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tmp_path))
    proc = server.popen(["export", "talky:make", "--input-shape", "1,1,8,8", "-o", "m.onnx"], env=env, cwd=tmp_path,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == proc.poll() == 130, err
    assert out == "" and "to stderr\n" in err and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_popen_kill_devnull_stderr_to_stdout_and_tmpdir(server, tmp_path):
    """SIGKILL gives -9; stderr=STDOUT merges the streams; the call's TMPDIR is the one the child uses."""
    (tmp_path / "tmpdir.py").write_text(
        "import sys, tempfile, time\n\ndef make():\n    print(tempfile.gettempdir())\n"
        "    print('err', file=sys.stderr, flush=True)\n    sys.stdout.flush()\n    time.sleep(600)\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tmp_path), TMPDIR=str(tmp))
    proc = server.popen(["export", "tmpdir:make", "--input-shape", "1,1,8,8", "-o", "m.onnx"], env=env, cwd=tmp_path,
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[bytes] = []
    while not {f"{tmp}\n".encode(), b"err\n"} <= set(lines):  # both streams in the one pipe
        line = proc.stdout.readline()
        assert line, lines
        lines.append(line)
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL
    assert proc.communicate(timeout=10) == (b"", None)
