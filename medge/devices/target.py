"""Device profiles as data: ``profiles.json`` → frozen `DeviceProfile` dataclasses.

A profile says what a target can run (runtime, precisions, toolkit version, memory, DLA/NPU) and
how to compile for it (recipe name + default compile options), and the channel multiple its
kernels block by (pruning rounds kept channels to it).  Every compile request is checked against
its profile with `validate_request` before any work starts.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medge.common.errors import TargetError, UnknownNameError, did_you_mean

PROFILES_FILE = Path(__file__).with_name("profiles.json")

FAMILIES = ("jetson", "intel", "android", "raspberrypi", "host")
PRECISIONS = ("fp32", "fp16", "int8")
#: channel multiple of a target whose profile names none
DEFAULT_CHANNEL_MULTIPLE = 8


@dataclass(frozen=True)
class Toolkit:
    """The vendor toolkit a target's artifacts are built for (e.g. TensorRT 10.3 on JetPack 6.1)."""

    name: str
    version: str
    platform: str = ""  # e.g. "JetPack 6.1", "Android 14"


@dataclass(frozen=True)
class DeviceProfile:
    """Everything medge knows about one compile target.  Treat the dict fields as read-only."""

    name: str
    display_name: str
    family: str
    recipe: str
    runtime: str
    runtime_device: str
    toolkit: Toolkit
    precisions: tuple[str, ...]
    default_precision: str
    int8_accelerated: bool
    memory_mb: int
    dla_cores: int = 0
    npu: str | None = None
    compute_capability: str | None = None
    supported_ops: str | tuple[str, ...] | None = None
    compile_options: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    #: where the INT8 gate reproduces this target's numerics: "host-kernels" or "ideal-simulation"
    #: (`medge.devices.int8_numerics`)
    int8_numerics: str = "host-kernels"
    #: channels the target's kernels compute in one block (oneDNN 16, TensorRT FP16 tensor cores 8,
    #: NPUs 32): a layer pruned to a width that is not a multiple costs as much as the next multiple
    channel_multiple: int = DEFAULT_CHANNEL_MULTIPLE
    #: precision -> channel multiple where a precision blocks differently (TensorRT INT8: 32)
    channel_multiple_by_precision: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the whole profile."""
        data = asdict(self)
        data["precisions"] = list(self.precisions)
        if isinstance(self.supported_ops, tuple):
            data["supported_ops"] = list(self.supported_ops)
        return copy.deepcopy(data)

    def options(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The profile's compile options with the user's `overrides` applied (a fresh dict)."""
        merged = copy.deepcopy(self.compile_options)
        merged.update(overrides or {})
        return merged

    def channel_multiple_for(self, precision: str) -> int:
        """The channel multiple pruned widths should keep on this target at `precision`."""
        return self.channel_multiple_by_precision.get(precision, self.channel_multiple)

    @property
    def uses_dla(self) -> bool:
        """Whether this target runs on a Jetson DLA core (rather than the GPU)."""
        return self.runtime_device.upper() == "DLA"


def _profile_from_dict(raw: dict[str, Any]) -> DeviceProfile:
    data = dict(raw)
    try:
        data["toolkit"] = Toolkit(**data["toolkit"])
        data["precisions"] = tuple(data["precisions"])
        if isinstance(data.get("supported_ops"), list):
            data["supported_ops"] = tuple(data["supported_ops"])
        profile = DeviceProfile(**data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"bad device profile {raw.get('name', '?')!r} in {PROFILES_FILE.name}: {exc}") from exc
    problems = []
    if profile.family not in FAMILIES:
        problems.append(f"family {profile.family!r} not in {FAMILIES}")
    if not profile.precisions or set(profile.precisions) - set(PRECISIONS):
        problems.append(f"precisions {profile.precisions} must be a non-empty subset of {PRECISIONS}")
    if profile.default_precision not in profile.precisions:
        problems.append(f"default_precision {profile.default_precision!r} not in {profile.precisions}")
    if profile.int8_numerics not in ("host-kernels", "ideal-simulation"):
        problems.append(f"int8_numerics {profile.int8_numerics!r} not in ('host-kernels', 'ideal-simulation')")
    problems += _channel_multiple_problems(profile)
    if problems:
        raise ValueError(f"bad device profile {profile.name!r}: " + "; ".join(problems))
    return profile


def _channel_multiple_problems(profile: DeviceProfile) -> list[str]:
    problems = []
    multiples = {"channel_multiple": profile.channel_multiple,
                 **{f"channel_multiple_by_precision[{p!r}]": m for p, m in profile.channel_multiple_by_precision.items()}}
    for key, multiple in multiples.items():
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            problems.append(f"{key} must be a positive integer (got {multiple!r})")
    unknown = sorted(set(profile.channel_multiple_by_precision) - set(profile.precisions))
    if unknown:
        problems.append(f"channel_multiple_by_precision names {unknown}, not in precisions {profile.precisions}")
    return problems


def load_profiles(path: str | Path = PROFILES_FILE) -> dict[str, DeviceProfile]:
    """Parse a profiles JSON file (``{"profiles": [...]}``) into `DeviceProfile` objects by name."""
    raw = json.loads(Path(path).read_text())
    profiles: dict[str, DeviceProfile] = {}
    for entry in raw["profiles"]:
        profile = _profile_from_dict(entry)
        if profile.name in profiles:
            raise ValueError(f"duplicate device profile {profile.name!r} in {Path(path).name}")
        profiles[profile.name] = profile
    return profiles


def get_target(name: str) -> DeviceProfile:
    """The profile called `name`; an unknown name raises `UnknownNameError` with a suggestion."""
    from medge.devices import TARGETS

    return TARGETS.get(name)


def validate_request(target: DeviceProfile, precision: str | None) -> str:
    """Check a precision request against `target`; returns the precision to use.

    None means the target's default.  An unsupported precision raises `TargetError` naming the
    precisions the target supports.
    """
    if precision is None:
        return target.default_precision
    if precision not in PRECISIONS:
        raise UnknownNameError(
            f"unknown precision '{precision}';{did_you_mean(precision, PRECISIONS)} choices: {', '.join(PRECISIONS)}"
        )
    if precision not in target.precisions:
        why = ""
        if precision == "int8" and not target.int8_accelerated:
            why = " (no INT8 acceleration on this device)"
        raise TargetError(
            f"target '{target.name}' does not support {precision}{why}; "
            f"supported precisions: {', '.join(target.precisions)}"
        )
    return precision
