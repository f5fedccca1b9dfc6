"""Profile on a device over SSH with the system OpenSSH client.

The artifact (or bundle folder) is copied with ``scp`` to a fresh temporary folder on the device,
``medge profile`` runs there, and its JSON report comes back tagged with the remote host.  SSH
always runs with ``BatchMode=yes`` (never prompt) and ``StrictHostKeyChecking=accept-new``; more
``-o`` options and an identity file pass straight through.  One multiplexed master connection
carries every ssh/scp call of a session, so a device is authenticated once per profile.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from medge.devices.profiling import ProfileConfig, ProfileReport, report_from_dict
from medge.common.errors import MedgeError, UsageError

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$")
_UNREACHABLE = ("connection refused", "timed out", "no route to host", "could not resolve", "network is unreachable",
                "connection closed", "connection reset")


@dataclass(frozen=True)
class SshTarget:
    """``ssh://[user@]host[:port]``."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> "SshTarget":
        """Parse an ``ssh://`` device URL (raises `UsageError` for anything else)."""
        match = _URL.match(url)
        if match is None:
            raise UsageError(f"bad device '{url}'; use 'local' or ssh://user@host[:port]")
        port = int(match["port"]) if match["port"] else None
        return cls(match["host"].strip("[]"), match["user"], port)

    @property
    def destination(self) -> str:
        """``user@host`` (or ``host``) as ssh/scp expect it."""
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        """The URL form, for reports."""
        return f"ssh://{self.destination}" + (f":{self.port}" if self.port else "")


@dataclass
class SshOptions:
    """How to reach the device and how to start medge there."""

    key: str | None = None
    options: list[str] = field(default_factory=list)  # extra "-o Key=Value" entries
    remote_command: str = "medge"  # or e.g. "python3 -m medge_cli", "/opt/venv/bin/medge"
    connect_timeout_s: int = 15


class SshSession:
    """Runs commands on, and copies files to, one SSH target.

    Used as a context manager it opens one multiplexed master connection (``ControlMaster``) that
    every later ssh/scp call reuses, and closes it on exit: one handshake per profiling session.
    """

    def __init__(self, target: SshTarget, opts: SshOptions) -> None:
        self.target, self.opts = target, opts
        self._control_dir: str | None = None

    def __enter__(self) -> "SshSession":
        self._common()  # validate the key and options before anything starts
        self._control_dir = tempfile.mkdtemp(prefix="medge-ssh-")
        args = ["ssh", *self._common(), "-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-f", "-N"]
        args += ["-p", str(self.target.port)] if self.target.port else []
        # stderr goes to a file: the backgrounded master keeps it open, a pipe would never reach EOF.
        with tempfile.TemporaryFile("w+") as err:
            try:
                code = subprocess.run(args + [self.target.destination], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, timeout=self.opts.connect_timeout_s * 4).returncode
            except subprocess.TimeoutExpired as exc:
                self._close_master()
                raise MedgeError(f"cannot reach {self.target.label}: connection timed out; check the address and port") from exc
            err.seek(0)
            message = err.read()
        if code != 0:
            self._close_master()
            self._raise_for_ssh(subprocess.CompletedProcess(args, code, "", message))
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_master()

    def _close_master(self) -> None:
        if self._control_dir is None:
            return
        control = f"{self._control_dir}/master"
        if Path(control).exists():
            subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", self.target.destination],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def _common(self) -> list[str]:
        args = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", f"ConnectTimeout={self.opts.connect_timeout_s}"]
        if self._control_dir is not None:
            args += ["-o", f"ControlPath={self._control_dir}/master"]
        if self.opts.key:
            if not Path(self.opts.key).exists():
                raise MedgeError(f"SSH key not found: {self.opts.key}; pass an existing private key to --ssh-key")
            args += ["-i", self.opts.key, "-o", "IdentitiesOnly=yes"]
        for opt in self.opts.options:
            if "=" not in opt:
                raise UsageError(f"bad --ssh-option '{opt}'; use KEY=VALUE, e.g. --ssh-option Compression=yes")
            args += ["-o", opt]
        return args

    def _raise_for_ssh(self, proc: subprocess.CompletedProcess) -> None:
        err = proc.stderr.strip()
        low = err.lower()
        where = self.target.label
        if "permission denied" in low or "too many authentication failures" in low:
            raise MedgeError(f"SSH authentication to {where} failed; pass the right key with --ssh-key or install your public key on the device")
        if "host key verification failed" in low or "remote host identification has changed" in low:
            raise MedgeError(f"SSH host key of {where} does not match known_hosts; check the device and fix ~/.ssh/known_hosts")
        if any(word in low for word in _UNREACHABLE):
            raise MedgeError(f"cannot reach {where}: {err.splitlines()[-1] if err else 'ssh failed'}; check the address, port and that sshd runs")
        raise MedgeError(f"ssh to {where} failed (exit 255): {err.splitlines()[-1] if err else 'no message'}")

    def run(self, command: str, *, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on the device; ssh-level failures become one-line `MedgeError`s."""
        args = ["ssh", *self._common()]
        if self.target.port:
            args += ["-p", str(self.target.port)]
        args += [self.target.destination, command]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise MedgeError("the OpenSSH client 'ssh' is not installed; install openssh-client") from exc
        except subprocess.TimeoutExpired as exc:
            raise MedgeError(f"command on {self.target.label} timed out after {timeout:.0f} s") from exc
        if proc.returncode == 255:
            self._raise_for_ssh(proc)
        if check and proc.returncode != 0:
            raise MedgeError(f"'{command.split()[0]}' failed on {self.target.label}: {proc.stderr.strip().splitlines()[-1:] or ['no message']}")
        return proc

    def copy_to(self, local: Path, remote_dir: str) -> None:
        """Copy a file or folder into `remote_dir` on the device (``scp -r``)."""
        self._scp(local, f"{remote_dir}/", recursive=True)

    def copy_file(self, local: Path, remote_path: str) -> None:
        """Copy one file to exactly `remote_path` on the device (``scp``)."""
        self._scp(local, shlex.quote(remote_path))

    def _scp(self, local: Path, remote: str, recursive: bool = False) -> None:
        args = ["scp", "-q", *(["-r"] if recursive else []), *self._common()]
        if self.target.port:
            args += ["-P", str(self.target.port)]
        args += [str(local), f"{self.target.destination}:{remote}"]
        proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 255 or (proc.returncode != 0 and "lost connection" in proc.stderr.lower()):
            self._raise_for_ssh(proc)
        if proc.returncode != 0:
            raise MedgeError(f"copying {local.name} to {self.target.label} failed: {proc.stderr.strip()}")


def _artifact_files(path: Path) -> list[Path]:
    """The local files that make up an artifact (IR .bin, ONNX external data) or the bundle folder."""
    files = [path]
    if path.suffix == ".xml" and path.with_suffix(".bin").exists():
        files.append(path.with_suffix(".bin"))
    if path.suffix == ".onnx" and path.with_name(path.name + ".data").exists():
        files.append(path.with_name(path.name + ".data"))
    return files


def _remote_profile_command(config: ProfileConfig, remote_cmd: str, artifact: str, inputs: str | None, report: str) -> str:
    q = shlex.quote
    parts = [remote_cmd, "profile", q(artifact), "--warmup", str(config.warmup), "--runs", str(config.runs),
             "--layers", str(config.top_layers), "--seed", str(config.seed), "--report", q(report)]
    if config.runtime:
        parts += ["--runtime", q(config.runtime)]
    if config.runtime_device:
        parts += ["--runtime-device", q(config.runtime_device)]
    if config.threads:
        parts += ["--threads", str(config.threads)]
    if inputs:
        parts += ["--inputs", q(inputs)]
    if config.options.get("precision"):
        parts += ["--precision", q(config.options["precision"])]
    return " ".join(parts)


def _not_installed(proc: subprocess.CompletedProcess, command: str) -> bool:
    err = proc.stderr.lower()
    first = command.split()[0]
    return proc.returncode == 127 or (proc.returncode != 0 and (
        "command not found" in err or "no module named" in err or f"{first}: not found" in err
        or (f"{first}: no such file" in err)
    ))


def _profile_over(session: SshSession, config: ProfileConfig, local: Path, opts: SshOptions) -> dict:
    """Copy, run ``medge profile`` remotely, fetch its JSON report, clean up; returns the report dict."""
    target = session.target
    workdir = session.run("mktemp -d /tmp/medge-profile.XXXXXX", timeout=opts.connect_timeout_s * 4).stdout.strip()
    try:
        for path in _artifact_files(local):
            session.copy_to(path, workdir)
        inputs = config.inputs
        if inputs and Path(inputs).exists():  # a local data source travels with the artifact
            session.copy_to(Path(inputs), workdir)
            inputs = f"{workdir}/{Path(inputs).name}"
        report_path = f"{workdir}/report.json"
        command = _remote_profile_command(config, opts.remote_command, f"{workdir}/{local.name}", inputs, report_path)
        proc = session.run(command, check=False)
        if _not_installed(proc, opts.remote_command):
            raise MedgeError(
                f"medge is not installed on {target.label} ('{opts.remote_command}' not found); install it there "
                "(pip install medge) or point --remote-medge/--remote-python at it"
            )
        fetched = session.run(f"cat {shlex.quote(report_path)}", check=False)
        if proc.returncode != 0 or fetched.returncode != 0:  # a failed run may still write its (failed) report
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("medge: error:")]
            detail = lines[-1][len("medge: error: "):] if lines else (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise MedgeError(f"medge profile failed on {target.label}: {detail}")
        try:
            data = json.loads(fetched.stdout)
        except json.JSONDecodeError as exc:
            raise MedgeError(f"the report from {target.label} is not JSON; check the remote medge version") from exc
    finally:
        try:
            session.run(f"rm -rf {shlex.quote(workdir)}", check=False, timeout=opts.connect_timeout_s * 4)
        except MedgeError:
            pass  # the device went away after profiling; the original outcome matters more
    return data


def profile_remote(config: ProfileConfig, device: str, opts: SshOptions | None = None) -> ProfileReport:
    """Copy `config.artifact` to the SSH `device`, run ``medge profile`` there, return its report."""
    opts = opts or SshOptions()
    target = SshTarget.parse(device)
    local = Path(config.artifact)
    if not local.exists():
        raise MedgeError(f"artifact not found: {local}")
    with SshSession(target, opts) as session:
        data = _profile_over(session, config, local, opts)
    report = report_from_dict(data)
    report.artifact = str(local)  # the device's copy was temporary
    report.remote = target.label
    return report


def remote_medge_json(session: SshSession, args: list[str], *, timeout: float | None = None) -> dict:
    """Run ``medge ARGS --json`` on the device and return its JSON report (one-line errors otherwise)."""
    command = " ".join([session.opts.remote_command, *(shlex.quote(a) for a in args), "--json"])
    proc = session.run(command, check=False, timeout=timeout)
    if _not_installed(proc, session.opts.remote_command):
        raise MedgeError(f"medge is not installed on {session.target.label} ('{session.opts.remote_command}' not found); "
                         "install it there (pip install 'medge[device]') or point --remote-medge at it")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("medge: error:")]
        detail = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no JSON report"])[-1]
        raise MedgeError(f"'medge {args[0]}' failed on {session.target.label}: {detail}") from exc
    return data


def forward_port(session: SshSession, remote_port: int) -> int:
    """Forward a free local loopback port to ``127.0.0.1:remote_port`` on the device over the session's
    master connection (so a service bound to the device's loopback can be probed); returns the local port."""
    import socket

    if session._control_dir is None:
        raise MedgeError("forward_port needs an open SshSession (use it as a context manager)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    args = ["ssh", *session._common(), "-O", "forward", "-L", f"127.0.0.1:{local}:127.0.0.1:{remote_port}",
            session.target.destination]
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    if proc.returncode != 0:
        raise MedgeError(f"cannot forward port {remote_port} of {session.target.label}: "
                         f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    return local
