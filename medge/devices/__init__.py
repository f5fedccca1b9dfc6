"""Device targets (profiles as data), compile recipes, bundles and `compile_model`.

Importing this package is cheap: profiles are read from ``profiles.json``; recipes and their
toolkits are imported only when a compile runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medge.devices.target import DeviceProfile, Toolkit, get_target, load_profiles, validate_request
from medge.common.registry import Registry

if TYPE_CHECKING:
    from medge.devices.compile import CompileConfig, CompileReport, compile_model

TARGETS: Registry[DeviceProfile] = Registry("target")
for _name, _profile in load_profiles().items():
    TARGETS.register(_name, _profile)
del _name, _profile

_LAZY = {"CompileConfig", "CompileReport", "compile_model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from medge.devices import compile as _compile

        return getattr(_compile, name)
    raise AttributeError(f"module 'medge.devices' has no attribute {name!r}")


__all__ = [
    "TARGETS",
    "DeviceProfile",
    "Toolkit",
    "get_target",
    "load_profiles",
    "validate_request",
    "CompileConfig",
    "CompileReport",
    "compile_model",
]
