"""Tiny artifacts and a real OpenSSH server on loopback for the profile tests."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.net import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "runtimes"))

from fixtures.cli_checks import medge_script  # noqa: E402
from tiny_artifacts import TinyArtifacts, cached_build  # noqa: E402

SSHD = Path(shutil.which("sshd") or "/usr/sbin/sshd")  # /usr/sbin is often not on PATH


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyArtifacts:
    """ONNX, OpenVINO IR, tflite (NCHW and NHWC) made from one tiny torch model."""
    return cached_build(tmp_path_factory.getbasetemp().parent)


@pytest.fixture
def unused_port() -> int:
    """A loopback port with no listener (for the unreachable-host test)."""
    return free_port()


@dataclass(frozen=True)
class SshServer:
    """A running sshd and what a client needs to use it."""

    url: str
    port: int
    key: Path
    known_hosts: Path
    medge: str  # absolute path of this installation's medge script (the remote command)

    def cli_args(self) -> list[str]:
        return ["--device", self.url, "--ssh-key", str(self.key), "--ssh-option", f"UserKnownHostsFile={self.known_hosts}",
                "--remote-medge", self.medge]


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    """A real sshd on a free loopback port, accepting one generated user key."""
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH server is not installed (apt-get install openssh-server)")
    medge = medge_script()  # next to sys.executable first, then PATH
    if medge is None:
        pytest.skip("the medge console script is not installed (pip install -e .)")
    tmp = tmp_path_factory.mktemp("sshd")
    _keygen(tmp / "host_key")
    _keygen(tmp / "user_key")
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nLogLevel ERROR\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        pytest.fail("sshd did not start listening within 20 s")
    yield SshServer(f"ssh://{getpass.getuser()}@127.0.0.1:{port}", port, tmp / "user_key", tmp / "known_hosts", medge)
    proc.terminate()
    proc.wait(timeout=10)
