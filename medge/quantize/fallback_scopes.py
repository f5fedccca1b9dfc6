"""Whole modules to FP32: the last stage of the INT8 gate's fallback.

Moving single nodes of a block to FP32 can make a gate worse, not better: in an mLSTM block
(us-xlstm-unet) the un-normalised ``C·v`` product and its normaliser are both off by far more
than their range in int8, and the errors cancel in their ratio; keep one of them in FP32 and
the other's error shows (Dice drop 0.028 with no node in FP32, 0.44 with 36 of them).  Keeping the
whole block in FP32 restores it (drop −0.0004) while the convolutions around it stay int8.

A module is an ONNX name scope (``/forward_layer/`` for ``/forward_layer/proj/MatMul``), taken at
the shallowest depth that holds at most `SCOPE_SHARE` of the graph's nodes, so that a scope that
wraps the whole network (``/features/``) is not one module.
"""

from __future__ import annotations

from typing import Any

SCOPE_SHARE = 0.5  # a module moved whole to FP32 holds at most this share of the graph's nodes


def _prefixes(name: str) -> list[str]:
    """``/a/b/C`` → ``['/a/', '/a/b/']`` (shallowest first); no scope → []."""
    parts = name.split("/")[1:-1] if name.startswith("/") else []
    return ["/" + "/".join(parts[:depth]) + "/" for depth in range(1, len(parts) + 1)]


def module_scopes(node_names: list[str], ranked: list[dict[str, Any]]) -> list[str]:
    """The modules holding the worst-ranked fallback groups, worst first (see the module docstring).

    `node_names` are the graph's node names; `ranked` is `rank_fallback_groups`' output (groups of
    node or tensor names, worst first).
    """
    limit = SCOPE_SHARE * len(node_names)
    sizes: dict[str, int] = {}
    for name in node_names:
        for prefix in _prefixes(name):
            sizes[prefix] = sizes.get(prefix, 0) + 1
    scopes: list[str] = []
    for group in ranked:
        for member in group["nodes"]:
            scope = next((p for p in _prefixes(member) if sizes.get(p, 0) <= limit), None)
            if scope and not any(scope.startswith(s) or s.startswith(scope) for s in scopes):
                scopes.append(scope)
    return scopes


def scope_nodes(scopes: list[str], names: list[str]) -> list[str]:
    """The node names inside any of `scopes`."""
    return [n for n in names if n.startswith(tuple(scopes))]
