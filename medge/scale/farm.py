"""FARM.yaml (the lab's devices), device leases, and `medge farm ls`.

```yaml
ssh_key: ~/.ssh/lab_ed25519      # defaults for every device (each device may override)
ssh_options: [UserKnownHostsFile=~/.ssh/lab_known_hosts]
remote_medge: medge
timeout: 300                     # seconds per profile on one device
devices:
  - {name: orin-1, target: jetson-orin-nano, address: ssh://nvidia@10.0.0.11, tags: [bench-a]}
  - {name: orin-2, target: jetson-orin-nano, address: ssh://nvidia@10.0.0.12:2222}
  - {name: orin-ray, target: jetson-orin-nano, ray: jetson-orin-nano}   # a Ray node resource
```

A lease is an exclusive `flock` on ``.medge-leases/<device>.lock`` beside FARM.yaml: one profile at a
time per device, across every medge process on this host that uses the same farm file.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import UsageError
from medge.common.reports import ListReport
from medge.scale.yamlfile import as_list, check_choice, check_keys, load_yaml, positive_number
from medge.common.fileio import write_json_atomic
from medge.devices import TARGETS
from medge.devices.remote import SshOptions, SshSession, SshTarget

TOP_KEYS = ("devices", "ssh_key", "ssh_options", "remote_medge", "remote_python", "timeout")
DEVICE_KEYS = ("name", "target", "address", "ray", "tags", "ssh_key", "ssh_options", "remote_medge", "remote_python",
               "timeout")
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class FarmDevice:
    """One device of the farm."""

    name: str
    target: str
    address: str | None = None  # ssh://user@host[:port]
    ray: str | None = None  # a Ray node resource, for `medge matrix --engine ray`
    tags: tuple[str, ...] = ()
    ssh_key: str | None = None
    ssh_options: tuple[str, ...] = ()
    remote_medge: str = "medge"
    remote_python: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def ssh_args(self) -> list[str]:
        """The `--ssh-*`/`--remote-*` flags of a `medge profile --device` run on this device."""
        args = ["--ssh-key", self.ssh_key] if self.ssh_key else []
        for opt in self.ssh_options:
            args += ["--ssh-option", opt]
        if self.remote_python:
            return args + ["--remote-python", self.remote_python]
        return args + ["--remote-medge", self.remote_medge]


@dataclass
class Farm:
    """A validated FARM.yaml."""

    path: Path
    devices: list[FarmDevice] = field(default_factory=list)

    @property
    def lease_dir(self) -> Path:
        """Where the device leases live (beside the farm file)."""
        return self.path.resolve().parent / ".medge-leases"


def _expand(value: str | None) -> str | None:
    return os.path.expanduser(value) if value else value


def load_farm(path: str | Path) -> Farm:
    """Read and validate FARM.yaml; every mistake is one line with "did you mean"."""
    path = Path(path)
    data = load_yaml(path, "farm")
    check_keys(data, TOP_KEYS, str(path))
    if "devices" not in data:
        raise UsageError(f"{path}: 'devices:' is missing; list each device with name, target and address")
    farm = Farm(path)
    seen: set[str] = set()
    for i, raw in enumerate(as_list(data["devices"], f"{path}: devices")):
        where = f"{path}: devices[{i}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: give a mapping with name, target and address (ssh://user@host[:port]) or ray")
        check_keys(raw, DEVICE_KEYS, where)
        merged = {k: data[k] for k in TOP_KEYS if k in data and k != "devices"} | raw
        for key in ("name", "target"):
            if not isinstance(merged.get(key), str) or not merged[key]:
                raise UsageError(f"{where}: needs '{key}:'")
        name = merged["name"]
        if name in seen:
            raise UsageError(f"{where}: a second device is named '{name}'; device names are unique")
        seen.add(name)
        check_choice(merged["target"], TARGETS.names(), f"{where} ({name}) target")
        if bool(merged.get("address")) == bool(merged.get("ray")):
            raise UsageError(f"{where} ({name}): give either address: ssh://user@host[:port] or ray: RESOURCE")
        if merged.get("address"):
            try:
                SshTarget.parse(str(merged["address"]))
            except UsageError as exc:
                raise UsageError(f"{where} ({name}): {exc}") from None
        key = _expand(merged.get("ssh_key"))
        if key and not Path(key).is_file():
            raise UsageError(f"{where} ({name}): ssh_key not found: {key}")
        options = tuple(str(o) for o in as_list(merged.get("ssh_options") or [], where)) if merged.get("ssh_options") else ()
        for opt in options:
            if "=" not in opt:
                raise UsageError(f"{where} ({name}): bad ssh_options entry '{opt}'; use KEY=VALUE")
        farm.devices.append(FarmDevice(
            name=name, target=merged["target"], address=merged.get("address"), ray=merged.get("ray"),
            tags=tuple(str(t) for t in (merged.get("tags") or [])), ssh_key=key,
            ssh_options=tuple(_expand(o) for o in options), remote_medge=str(merged.get("remote_medge", "medge")),
            remote_python=merged.get("remote_python"),
            timeout_s=float(positive_number(merged.get("timeout", DEFAULT_TIMEOUT_S), f"{where} ({name}) timeout")),
        ))
    return farm


class Lease:
    """An exclusive, non-blocking lease on one device (released on close or when the process dies)."""

    def __init__(self, farm: Farm, device: FarmDevice) -> None:
        farm.lease_dir.mkdir(parents=True, exist_ok=True)
        self.path = farm.lease_dir / f"{device.name}.lock"
        self.fd: int | None = None

    def acquire(self, holder: str) -> bool:
        """Take the lease; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder} pid {os.getpid()} since {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        """Give the lease back."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str | None:
        """Who holds the lease now (None when free)."""
        if not self.path.exists():
            return None
        if self.acquire("probe"):
            self.release()
            return None
        return self.path.read_text().strip() or "another process"


def _probe(device: FarmDevice, timeout_s: float) -> dict[str, Any]:
    """Reach the device over SSH: reachable, round trip, and facts (machine, kernel, CPUs, medge version)."""
    remote = f"{device.remote_python} -m medge_cli" if device.remote_python else device.remote_medge
    session = SshSession(SshTarget.parse(device.address or ""), SshOptions(
        key=device.ssh_key, options=list(device.ssh_options), remote_command=remote, connect_timeout_s=int(timeout_s)))
    t0 = time.monotonic()
    try:
        proc = session.run(f"uname -m; uname -r; nproc; {remote} --version 2>/dev/null || echo no-medge",
                           check=False, timeout=timeout_s * 2)
    except Exception as exc:  # noqa: BLE001 — any failure to reach is the answer "unreachable"
        return {"reachable": False, "facts": str(exc)[:160]}
    lines = proc.stdout.split("\n")
    arch, kernel, cpus, medge = (lines + ["?"] * 4)[:4]
    return {"reachable": True, "rtt_ms": round((time.monotonic() - t0) * 1000), "last_seen": _now(),
            "facts": f"{arch} linux {kernel}, {cpus} CPUs, {medge.strip() or 'no-medge'}"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class FarmListReport(ListReport):
    """`medge farm ls`: one row per device."""

    title: ClassVar[str] = "medge farm ls"
    kind: str = "devices"


def farm_ls(farm: Farm, timeout_s: float = 5.0) -> FarmListReport:
    """Each device: target, reachable, busy/free (its lease), last seen and facts, probed in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    seen = _last_seen(farm)
    with ThreadPoolExecutor(max_workers=min(16, len(farm.devices))) as pool:
        probes = list(pool.map(lambda d: _probe(d, timeout_s) if d.address else
                               {"reachable": None, "facts": f"Ray node resource '{d.ray}' (see 'ray status')"},
                               farm.devices))
    items = []
    for device, probe in zip(farm.devices, probes):
        holder = Lease(farm, device).holder()
        if probe.get("reachable"):
            seen[device.name] = probe["last_seen"]
        items.append({"name": device.name, "target": device.target, "address": device.address or f"ray:{device.ray}",
                      "reachable": {True: "yes", False: "no", None: "-"}[probe["reachable"]],
                      "lease": f"busy ({holder})" if holder else "free", "last_seen": seen.get(device.name, "never"),
                      "tags": ",".join(device.tags) or "-", "facts": probe.get("facts", "")})
    _save_last_seen(farm, seen)
    return FarmListReport(items=items)


def _last_seen(farm: Farm) -> dict[str, str]:
    import json

    try:
        return json.loads((farm.lease_dir / "last_seen.json").read_text())
    except (OSError, ValueError):
        return {}


def _save_last_seen(farm: Farm, seen: dict[str, str]) -> None:
    farm.lease_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(farm.lease_dir / "last_seen.json", seen)


def note_seen(farm: Farm, device: FarmDevice) -> None:
    """Record that `device` answered just now (shown by `medge farm ls`)."""
    seen = _last_seen(farm)
    seen[device.name] = _now()
    _save_last_seen(farm, seen)


__all__ = ["Farm", "FarmDevice", "FarmListReport", "Lease", "farm_ls", "load_farm", "note_seen"]
