"""Import one MONAI network module without ``import monai``.

``import monai`` (and ``monai.networks.nets``) loads every MONAI submodule, which pulls in
transformers, pandas and matplotlib: about 5 s before the first line of our code runs.  The zoo
needs two classes (DenseNet, UNet), so `monai_class` imports just the modules that define them:
the packages on the way (``monai``, ``monai.networks`` …) are stood in for by empty package
modules while the import runs, and plotting/dataframe libraries that MONAI only probes for with
``optional_import`` are hidden for that time.  If MONAI is already imported, or its layout changed
so that this fails, the normal import is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from typing import Any

log = logging.getLogger(__name__)

# Packages whose __init__ imports everything below them; stood in for while one network module loads.
_PACKAGES = ("monai", "monai.apps", "monai.networks", "monai.networks.nets", "monai.networks.layers",
             "monai.networks.blocks")
# Optional extras MONAI probes for at import (matplotlib, pandas via monai.utils; transformers via nets).
_HIDDEN = ("matplotlib", "matplotlib.pyplot", "pandas", "transformers")


def _light_import(module: str) -> types.ModuleType:
    spec = importlib.util.find_spec("monai")
    if spec is None or spec.origin is None:
        raise ImportError("monai is not installed")
    base = os.path.dirname(spec.origin)
    added: list[str] = []
    try:
        for name in _PACKAGES:
            stand_in = types.ModuleType(name)
            stand_in.__path__ = [os.path.join(base, *name.split(".")[1:])]
            stand_in.__spec__ = importlib.util.spec_from_loader(name, None, is_package=True)
            stand_in.__spec__.submodule_search_locations = stand_in.__path__
            sys.modules[name] = stand_in
            added.append(name)
        for name in _HIDDEN:
            if name not in sys.modules:
                sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
                added.append(name)
        versions = importlib.import_module("monai._version").get_versions()
        sys.modules["monai"].__version__ = str(versions.get("version", "0+unknown"))
        # blocks/convolutions.py imports ADN from the package itself
        sys.modules["monai.networks.blocks"].ADN = importlib.import_module("monai.networks.blocks.acti_norm").ADN
        return importlib.import_module(module)
    except Exception:
        for name in list(sys.modules):  # drop the half-imported modules so the normal import starts clean
            if name == "monai" or name.startswith("monai."):
                del sys.modules[name]
        added = [n for n in added if not n.startswith("monai")]
        raise
    finally:
        for name in added:
            sys.modules.pop(name, None)


def monai_class(module: str, name: str) -> Any:
    """``monai_class("monai.networks.nets.densenet", "DenseNet")`` without importing all of MONAI."""
    if "monai" not in sys.modules:
        try:
            return getattr(_light_import(module), name)
        except Exception as exc:  # noqa: BLE001 - a MONAI layout we do not know: fall back to the full import
            log.debug("importing %s alone failed (%s); importing all of MONAI", module, exc)
    return getattr(importlib.import_module(module), name)
