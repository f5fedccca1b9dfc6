"""What `medge deploy` runs on the device: the app's command line, its systemd unit, the pidfile scripts.

All text here is pure (no I/O), so `--dry-run` prints exactly what a real deploy would run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from medge.common.errors import UsageError

APPS = ("ultrasound", "ecg", "xray")
SUPERVISORS = ("systemd", "none")
# Where each app's model goes on its command line, and the default port of its health check.
_MODEL_FLAG = {"ultrasound": "--segmenter", "ecg": "--model", "xray": "--bundle"}
_DEFAULT_PORT = {"ultrasound": 8080, "ecg": 8090, "xray": 11112}


def option_value(args: list[str], name: str) -> str | None:
    """The value of ``name VALUE`` or ``name=VALUE`` in `args` (last one wins), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class AppSpec:
    """One deployed app: which app, its extra arguments, and where its files live on the device."""

    app: str
    app_args: tuple[str, ...]
    root: str  # the app's folder on the device: bundles/, state/, deployed.json, app.pid, app.log
    medge: str  # the medge command on the device
    supervisor: str = "systemd"

    def __post_init__(self) -> None:
        if self.app not in APPS:
            raise UsageError(f"--app {self.app!r}: choose one of {', '.join(APPS)}")
        if self.supervisor not in SUPERVISORS:
            raise UsageError(f"--supervisor {self.supervisor!r}: choose one of {', '.join(SUPERVISORS)}")
        if option_value(list(self.app_args), _MODEL_FLAG[self.app]) is not None:
            raise UsageError(f"leave {_MODEL_FLAG[self.app]} out of the app arguments: deploy passes the deployed bundle")

    @property
    def service(self) -> str:
        """The systemd unit name (also the dedicated user's name)."""
        return f"medge-{self.app}"

    @property
    def state_dir(self) -> str:
        """The app's private working directory (mode 0700): systemd's StateDirectory, else ROOT/state."""
        return f"/var/lib/{self.service}" if self.supervisor == "systemd" else f"{self.root}/state"

    def health(self) -> tuple[str, str, int]:
        """(kind, host, port) of the health check: ``http`` ``/stats`` of the view, or a DICOM ``echo``."""
        args = list(self.app_args)
        if self.app == "xray":
            port = option_value(args, "--port")
            return "echo", "127.0.0.1", int(port) if port and port.isdigit() else _DEFAULT_PORT["xray"]
        from medge.apps.view import parse_view

        view = option_value(args, "--view") or f"browser:127.0.0.1:{_DEFAULT_PORT[self.app]}"
        kind, _host, port = parse_view(view, _DEFAULT_PORT[self.app])
        if kind != "browser":
            raise UsageError(f"--view {view}: a deployed {self.app} app is checked through its browser view's /stats; "
                             "use --view browser[:HOST:PORT]")
        return "http", "127.0.0.1", port

    def command(self, bundle: str) -> list[str]:
        """The app's full command line for the deployed `bundle`."""
        args = list(self.app_args)
        head = shlex.split(self.medge)
        if self.app == "ultrasound":
            cmd = [*head, "ultrasound", "--segmenter", bundle, "--quiet"]
        elif self.app == "ecg":
            cmd = [*head, "ecg", "stream", "--model", bundle]
        else:
            cmd = [*head, "xray", "serve", "--bundle", bundle]
            for flag, default in (("--db", "worklist.sqlite"), ("--store", "store")):
                if option_value(args, flag) is None:
                    cmd += [flag, f"{self.state_dir}/{default}"]
        if self.app != "xray" and option_value(args, "--view") is None:
            cmd += ["--view", f"browser:127.0.0.1:{_DEFAULT_PORT[self.app]}"]
        return cmd + args


def systemd_unit(spec: AppSpec, bundle: str) -> str:
    """The unit file: a dedicated user, Restart=on-failure, journald, a 0700 state directory, and
    ``LimitRTPRIO`` when the app asks for real-time threads (``--rt-priority N``)."""
    command = " ".join(_systemd_quote(a) for a in spec.command(bundle))
    rt_priority = option_value(list(spec.app_args), "--rt-priority")
    rt_limit = f"LimitRTPRIO={int(rt_priority)}\n" if rt_priority and rt_priority.isdigit() else ""
    return f"""[Unit]
Description=medge {spec.app} app ({bundle})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={spec.service}
Group={spec.service}
ExecStart={command}
WorkingDirectory={spec.state_dir}
StateDirectory={spec.service}
StateDirectoryMode=0700
Environment=PYTHONUNBUFFERED=1 XDG_CACHE_HOME={spec.state_dir}/.cache
Restart=on-failure
RestartSec=5
{rt_limit}StandardOutput=journal
StandardError=journal
SyslogIdentifier={spec.service}
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@,+" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$") + '"'


def pidfile_start(spec: AppSpec, bundle: str) -> str:
    """Shell that starts the app in its own session, its pid in ``app.pid``, its output in ``app.log``."""
    q = shlex.quote
    command = " ".join(q(a) for a in spec.command(bundle))
    # Only the app is backgrounded (every fd away from ssh's pipes), so ssh returns at once.
    return (f"install -d -m 0700 {q(spec.state_dir)} && cd {q(spec.state_dir)} || exit 1; "
            f"XDG_CACHE_HOME={q(spec.state_dir + '/.cache')} PYTHONUNBUFFERED=1 "
            f"setsid {command} >> {q(spec.root + '/app.log')} 2>&1 < /dev/null & "
            f"echo $! > {q(spec.root + '/app.pid.tmp')} && mv {q(spec.root + '/app.pid.tmp')} {q(spec.root + '/app.pid')}")


def pidfile_status(spec: AppSpec) -> str:
    """Shell that prints ``running PID`` or ``stopped``."""
    pid = shlex.quote(spec.root + "/app.pid")
    return f'p=$(cat {pid} 2>/dev/null); if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then echo "running $p"; else echo stopped; fi'


def pidfile_stop(spec: AppSpec, wait_s: int = 15) -> str:
    """Shell that stops the app (SIGTERM, then SIGKILL after `wait_s`) and removes its pidfile."""
    pid = shlex.quote(spec.root + "/app.pid")
    return (f'p=$(cat {pid} 2>/dev/null); if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -TERM -"$p" 2>/dev/null || kill -TERM "$p"; '
            f'for i in $(seq {wait_s * 10}); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; '
            f'kill -0 "$p" 2>/dev/null && kill -KILL -"$p" 2>/dev/null; fi; rm -f {pid}; echo stopped')
