"""`medge deploy`: put a bundle and an app on a device over SSH and run it as a service.

Steps: connect → check → copy (by hash: unchanged files are skipped, an interrupted copy resumes
file by file, each file lands under a ``.part`` name first) → verify (``medge verify`` there) →
engine (TensorRT bundles: ``build_engine.sh`` on the device, log kept) → install (systemd unit, or
the pidfile scripts of ``--supervisor none``) → start → health (the view's ``/stats`` or a DICOM
C-ECHO, through an SSH port forward) → record (``deployed.json``).  Each bundle version has its own
folder, so nothing before *start* touches the running app; when start or health fails, the
previous deployment is started again and the report names the failed step.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medge.deploy.service import AppSpec, pidfile_start, pidfile_status, pidfile_stop, systemd_unit
from medge.common.errors import MedgeError, UsageError
from medge.common.fileio import sha256_file
from medge.common.reports import Report, human_bytes
from medge.deploy.probe import probe
from medge.devices.remote import SshSession, SshTarget, forward_port


@dataclass
class DeployReport(Report):
    """What a deploy, ``--status`` or ``--stop`` did, step by step."""

    title = "medge deploy"
    action: str = "deploy"
    device: str = ""
    app: str = ""
    supervisor: str = ""
    bundle: str | None = None
    manifest_sha256: str | None = None
    remote_bundle: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    state: str | None = None
    health: dict[str, Any] | None = None
    deployed: dict[str, Any] | None = None
    failed_step: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """False when a step failed."""
        return self.failed_step is None

    def table_rows(self) -> list[tuple[str, str]]:
        """One row per step with its time; then state and health."""
        rows = [("action", f"{self.action} {self.app} on {self.device} ({self.supervisor})")]
        if self.bundle:
            rows.append(("bundle", f"{self.bundle} (manifest {str(self.manifest_sha256)[:12]})"
                                   + (f" → {self.remote_bundle}" if self.remote_bundle else "")))
        for step in self.steps:
            took = f"{step['seconds']:.2f} s" if step.get("seconds") is not None else "-"
            rows.append((f"step {step['name']}", f"{step['status']}, {took}: {step.get('detail', '')}".rstrip(": ")))
        if self.state is not None:
            rows.append(("state", self.state))
        if self.health is not None:
            rows.append(("health", f"{'ok' if self.health.get('ok') else 'FAIL'} - {self.health.get('detail')}"))
        if self.failed_step:
            rows.append(("failed step", f"{self.failed_step}: {self.error}"))
        return rows


class _StepFailed(MedgeError):
    pass


class Deployer:
    """Runs the steps of one deploy/status/stop over an open `SshSession` (or prints them: dry run)."""

    def __init__(self, spec: AppSpec, report: DeployReport, session=None) -> None:
        self.spec, self.report, self.session = spec, report, session
        self.sudo = ""

    # --- steps ------------------------------------------------------------------------------------
    def step(self, name: str, action, *, dry: str = "") -> Any:
        """Run `action()` as step `name`, timing it; a `MedgeError` marks it failed and stops the deploy."""
        entry: dict[str, Any] = {"name": name, "status": "ok"}
        self.report.steps.append(entry)
        if self.session is None:
            entry.update(status="dry-run", seconds=None, detail=dry)
            return None
        t0 = time.perf_counter()
        try:
            detail = action()
        except MedgeError as exc:
            entry.update(status="failed", seconds=time.perf_counter() - t0, detail=str(exc))
            self.report.failed_step, self.report.error = name, str(exc)
            raise _StepFailed(f"step '{name}' failed: {exc}") from exc
        text = detail.get("detail", "") if isinstance(detail, dict) else detail  # a health result
        entry.update(seconds=time.perf_counter() - t0, detail=text or "")
        return detail

    def sh(self, command: str, *, timeout: float = 120, check: bool = True):
        """Run shell `command` on the device."""
        proc = self.session.run(command, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no message"]
            raise MedgeError(f"'{command[:60]}…' exited {proc.returncode} on {self.session.target.label}: {tail[0]}")
        return proc

    def check(self) -> str:
        """medge is on the device; systemd and root (or sudo -n) are there for ``--supervisor systemd``."""
        proc = self.sh(f"{self.spec.medge} --version", check=False)
        if proc.returncode != 0:
            raise MedgeError(f"medge is not installed on {self.session.target.label} ('{self.spec.medge} --version' failed); "
                             "install it there (pip install 'medge[device]') or pass --remote-medge")
        detail = proc.stdout.strip()
        head = shlex.split(self.spec.medge)
        where = self.sh(f"command -v {shlex.quote(head[0])}", check=False).stdout.strip()
        if where.startswith("/"):  # systemd wants an absolute ExecStart; a pidfile start gets the same command
            self.spec = dataclasses.replace(self.spec, medge=shlex.join([where, *head[1:]]))
        if self.spec.supervisor == "systemd":
            probe = self.sh('command -v systemctl >/dev/null && [ -d /run/systemd/system ] && echo systemd; id -u; '
                            'sudo -n true 2>/dev/null && echo sudo', check=False).stdout.split()
            if "systemd" not in probe:
                raise MedgeError(f"{self.session.target.label} does not run systemd; deploy with --supervisor none (a pidfile)")
            if "0" not in probe[:2]:
                if "sudo" not in probe:
                    raise MedgeError("installing a systemd unit needs root; allow passwordless sudo for this user "
                                     "or deploy with --supervisor none")
                self.sudo = "sudo -n "
            detail += ", systemd"
        return detail

    def copy(self, bundle: Path, remote_dir: str) -> str:
        """Copy `bundle` into `remote_dir`, skipping files whose sha256 already matches there."""
        q = shlex.quote
        self.sh(f"{self.sudo}install -d -o $(id -un) {q(str(Path(remote_dir).parent.parent))} && mkdir -p {q(remote_dir)}")
        listing = self.sh(f"cd {q(remote_dir)} && find . -type f ! -name '*.part' -exec sha256sum {{}} +", check=False).stdout
        remote = {line[66:].removeprefix("./"): line[:64] for line in listing.splitlines() if len(line) > 66}
        files = sorted(p for p in bundle.rglob("*") if p.is_file())
        sent = skipped = 0
        for path in files:
            rel = path.relative_to(bundle).as_posix()
            if remote.get(rel) == sha256_file(path):
                skipped += path.stat().st_size
                continue
            target = f"{remote_dir}/{rel}"
            self.sh(f"mkdir -p {q(str(Path(target).parent))}")
            self.session.copy_file(path, target + ".part")
            self.sh(f"mv -f {q(target + '.part')} {q(target)}")
            sent += path.stat().st_size
        return f"{len(files)} files, sent {human_bytes(sent)}, unchanged {human_bytes(skipped)}"

    def health(self, timeout_s: float) -> dict[str, Any]:
        """Poll the app until its health check answers, it dies, or `timeout_s` passes."""
        kind, _host, port = self.spec.health()
        local = forward_port(self.session, port)
        deadline = time.monotonic() + timeout_s
        detail = "no answer yet"
        while True:
            state = self.state()
            if not state.startswith(("running", "active")):
                return {"ok": False, "kind": kind, "port": port, "detail": f"the app is {state}: {self.last_log()}"}
            ok, detail = probe(kind, local, self.spec)
            if ok or time.monotonic() > deadline:
                return {"ok": ok, "kind": kind, "port": port, "detail": detail}
            time.sleep(0.5)

    def state(self) -> str:
        """``running PID`` / ``stopped`` (pidfile) or systemd's ``active``/``inactive``/``failed``."""
        if self.spec.supervisor == "none":
            return self.sh(pidfile_status(self.spec), check=False).stdout.strip() or "unknown"
        return self.sh(f"systemctl is-active {self.spec.service}", check=False).stdout.strip() or "unknown"

    def last_log(self, lines: int = 3) -> str:
        """The app's last log lines (its log file or journald), joined on one line."""
        if self.spec.supervisor == "none":
            cmd = f"tail -n {lines} {shlex.quote(self.spec.root + '/app.log')}"
        else:
            cmd = f"{self.sudo}journalctl -u {self.spec.service} -n {lines} --no-pager -o cat"
        text = self.sh(cmd, check=False).stdout.strip()
        return " | ".join(text.splitlines()[-lines:]) or "no log output"

    def read_deployed(self) -> dict[str, Any] | None:
        """The device's record of the running deployment (``deployed.json``), if any."""
        proc = self.sh(f"cat {shlex.quote(self.spec.root + '/deployed.json')}", check=False)
        try:
            return json.loads(proc.stdout) if proc.returncode == 0 else None
        except json.JSONDecodeError:
            return None

    def write_deployed(self, record: dict[str, Any]) -> None:
        """Write ``deployed.json`` atomically on the device."""
        path = shlex.quote(self.spec.root + "/deployed.json")
        text = shlex.quote(json.dumps(record, indent=2, sort_keys=True))
        self.sh(f"printf '%s\\n' {text} > {path}.tmp && mv -f {path}.tmp {path}")

    def install(self, bundle: str) -> str:
        """systemd: the dedicated user and the unit (the old one kept as .prev); none: the state dir."""
        q = shlex.quote
        if self.spec.supervisor == "none":
            self.sh(f"install -d -m 0700 {q(self.spec.state_dir)}")
            return f"state {self.spec.state_dir} (0700), pidfile {self.spec.root}/app.pid"
        user, unit = self.spec.service, f"/etc/systemd/system/{self.spec.service}.service"
        self.sh(f"id -u {user} >/dev/null 2>&1 || {self.sudo}useradd --system --no-create-home "
                f"--shell /usr/sbin/nologin {user}")
        text = q(systemd_unit(self.spec, bundle))
        self.sh(f"printf '%s' {text} | {self.sudo}tee {unit}.new >/dev/null && "
                f"{{ [ ! -f {unit} ] || {self.sudo}cp -f {unit} {unit}.prev; }} && {self.sudo}mv -f {unit}.new {unit} && "
                f"{self.sudo}systemctl daemon-reload")
        return f"{unit}, user {user}"

    def start(self, bundle: str) -> str:
        """Stop what runs, start `bundle`'s app."""
        if self.spec.supervisor == "none":
            self.sh(pidfile_stop(self.spec))
            self.sh(pidfile_start(self.spec, bundle))
            return self.state()
        self.sh(f"{self.sudo}systemctl enable {self.spec.service} >/dev/null 2>&1; {self.sudo}systemctl restart {self.spec.service}")
        return self.state()

    def stop(self) -> str:
        """Stop the app."""
        if self.spec.supervisor == "none":
            return self.sh(pidfile_stop(self.spec)).stdout.strip()
        self.sh(f"{self.sudo}systemctl stop {self.spec.service}")
        return self.state()

    def roll_back(self, previous: dict[str, Any] | None, health_timeout_s: float) -> tuple[bool, str]:
        """Stop the new app and start the previous deployment again (if there was one); (whether the
        device is back to a working state, what happened), the previous app's health checked as a new one's."""
        self.stop()
        if not previous:
            return True, "no previous deployment to restore; the app is stopped"
        if self.spec.supervisor == "systemd":
            unit = f"/etc/systemd/system/{self.spec.service}.service"
            self.sh(f"[ -f {unit}.prev ] && {self.sudo}mv -f {unit}.prev {unit} && {self.sudo}systemctl daemon-reload", check=False)
        current = self.spec
        self.spec = dataclasses.replace(current, app_args=tuple(previous.get("app_args", current.app_args)))
        try:
            self.start(previous["bundle"])
            health = self.health(health_timeout_s)
        finally:
            self.spec = current
        if health["ok"]:
            return True, f"the previous deployment ({previous['bundle']}) runs again and answers its health check"
        return False, (f"the previous deployment ({previous['bundle']}) was started again but does not answer its "
                       f"health check: {health['detail']}")


@dataclass
class DeployConfig:
    """One `medge deploy` call."""

    device: str
    app: str
    bundle: str | None = None
    app_args: tuple[str, ...] = ()
    supervisor: str = "systemd"
    remote_dir: str | None = None  # default /opt/medge (systemd) or ~/.medge/deploy (none)
    action: str = "deploy"  # deploy | status | stop
    dry_run: bool = False
    health_timeout_s: float = 60.0


def _root(config: DeployConfig, home: str) -> str:
    base = config.remote_dir or ("/opt/medge" if config.supervisor == "systemd" else f"{home}/.medge/deploy")
    return f"{base.rstrip('/')}/{config.app}"


def run_deploy(config: DeployConfig, opts) -> DeployReport:
    """Deploy, or report (`status`) or stop a deployed app; `--dry-run` prints every step and connects nowhere."""
    target = SshTarget.parse(config.device)
    report = DeployReport(action=("dry-run " if config.dry_run else "") + config.action, device=target.label,
                          app=config.app, supervisor=config.supervisor)
    if config.action == "deploy":
        if not config.bundle:
            raise UsageError("give the bundle to deploy: medge deploy BUNDLE --device ssh://user@host --app APP")
        bundle = Path(config.bundle)
        if not (bundle / "manifest.json").is_file():
            raise UsageError(f"{bundle} is not a bundle folder (no manifest.json); make one with 'medge compile'")
        report.bundle, report.manifest_sha256 = str(bundle), sha256_file(bundle / "manifest.json")
    if config.dry_run:
        spec = AppSpec(config.app, config.app_args, _root(config, "~"), opts.remote_command, config.supervisor)
        _plan(Deployer(spec, report), config, report)
        return report
    t0 = time.perf_counter()
    with SshSession(target, opts) as session:
        home = session.run("printf %s \"$HOME\"").stdout.strip() or "/tmp"
        connect_s = time.perf_counter() - t0
        spec = AppSpec(config.app, config.app_args, _root(config, home), opts.remote_command, config.supervisor)
        deployer = Deployer(spec, report, session)
        try:
            if config.action == "deploy":
                _deploy(deployer, config, report, connect_s)
            elif config.action == "status":
                _status(deployer, report, config)
            else:
                report.deployed = deployer.read_deployed()
                report.state = deployer.step("stop", deployer.stop)
        except _StepFailed:
            pass  # the report names the failed step; the CLI turns it into the error line
    return report


def _plan(deployer: Deployer, config: DeployConfig, report: DeployReport) -> None:
    """The dry run: every step with what it would run."""
    spec = deployer.spec
    remote = f"{spec.root}/bundles/{str(report.manifest_sha256)[:12]}"
    report.remote_bundle = remote if config.action == "deploy" else None
    if config.action != "deploy":
        deployer.step(config.action, None, dry=f"{config.action} {spec.service} ({spec.supervisor})")
        return
    bundle = Path(config.bundle or "")
    files = [p for p in bundle.rglob("*") if p.is_file()]
    deployer.step("connect", None, dry=f"ssh {report.device}")
    deployer.step("check", None, dry=f"{spec.medge} --version" + (", systemd and root/sudo" if spec.supervisor == "systemd" else ""))
    deployer.step("copy", None, dry=f"{len(files)} files ({human_bytes(sum(p.stat().st_size for p in files))}) to {remote}, "
                                    "unchanged ones (same sha256) skipped")
    deployer.step("verify", None, dry=f"{spec.medge} verify {remote} --expect-sha256 {report.manifest_sha256}")
    engine = (bundle / "build_engine.sh").is_file()
    deployer.step("engine", None, dry=f"cd {remote} && bash build_engine.sh > engine_build.log" if engine else "skipped (not TensorRT)")
    install = (f"/etc/systemd/system/{spec.service}.service:\n{systemd_unit(spec, remote)}" if spec.supervisor == "systemd"
               else f"pidfile {spec.root}/app.pid; start: {pidfile_start(spec, remote)}")
    deployer.step("install", None, dry=install)
    deployer.step("start", None, dry=" ".join(spec.command(remote)))
    kind, _host, port = spec.health()
    deployer.step("health", None, dry=f"{'GET /stats' if kind == 'http' else 'C-ECHO'} on the device's 127.0.0.1:{port} "
                                      f"through an SSH tunnel, up to {config.health_timeout_s:.0f} s")
    deployer.step("record", None, dry=f"{spec.root}/deployed.json")


def _deploy(deployer: Deployer, config: DeployConfig, report: DeployReport, connect_s: float) -> None:
    spec, bundle = deployer.spec, Path(str(config.bundle))
    remote = f"{spec.root}/bundles/{str(report.manifest_sha256)[:12]}"
    report.remote_bundle = remote
    q = shlex.quote
    deployer.step("connect", lambda: f"{deployer.session.target.label}, app folder {spec.root}")
    report.steps[-1]["seconds"] = connect_s  # the SSH master connection was opened before the steps
    deployer.step("check", deployer.check)
    deployer.step("copy", lambda: deployer.copy(bundle, remote))
    deployer.step("verify", lambda: deployer.sh(f"{spec.medge} verify {q(remote)} --expect-sha256 {report.manifest_sha256}",
                                                timeout=600) and "manifest and every file hash match")
    if (bundle / "build_engine.sh").is_file():
        deployer.step("engine", lambda: deployer.sh(f"cd {q(remote)} && bash build_engine.sh > engine_build.log 2>&1",
                                                    timeout=3600) and f"log kept in {remote}/engine_build.log")
    previous = deployer.read_deployed()
    deployer.step("install", lambda: deployer.install(remote))
    try:
        report.state = deployer.step("start", lambda: deployer.start(remote))
        report.health = deployer.step("health", lambda: _healthy(deployer, config.health_timeout_s))
    except _StepFailed:
        restored, detail = deployer.roll_back(previous, config.health_timeout_s)
        report.steps.append({"name": "roll back", "status": "ok" if restored else "failed", "seconds": None,
                             "detail": detail})
        raise
    record = {"bundle": remote, "manifest_sha256": report.manifest_sha256, "app": spec.app, "app_args": list(spec.app_args),
              "supervisor": spec.supervisor, "command": spec.command(remote), "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    deployer.step("record", lambda: deployer.write_deployed(record) or f"{spec.root}/deployed.json")
    report.deployed = record


def _healthy(deployer: Deployer, timeout_s: float) -> dict[str, Any]:
    health = deployer.health(timeout_s)
    if not health["ok"]:
        raise MedgeError(f"health check failed: {health['detail']}")
    return health


def _status(deployer: Deployer, report: DeployReport, config: DeployConfig) -> None:
    report.deployed = deployer.read_deployed()
    report.state = deployer.step("state", deployer.state)
    if report.deployed is None:
        report.state += f" (nothing deployed for {deployer.spec.app} under {deployer.spec.root})"
        return
    report.bundle, report.manifest_sha256 = report.deployed.get("bundle"), report.deployed.get("manifest_sha256")
    if report.state.startswith(("running", "active")):
        deployer.spec = dataclasses.replace(deployer.spec, app_args=tuple(report.deployed.get("app_args", ())))
        report.health = deployer.step("health", lambda: deployer.health(min(config.health_timeout_s, 10.0)))
