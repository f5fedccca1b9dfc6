"""Model input declarations: `InputSpec` (name, shape, dtype, default) and the ``--input-shape``
syntax (``1x1x224x224`` or ``image=1x1x256x256 point=1x2:float32``) every command parses the same way."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from medge.common.errors import UsageError

INPUT_DTYPES = ("float32", "float16", "int64", "int32", "bool")


@dataclass(frozen=True)
class InputSpec:
    """One named model input: shape (batch first) and dtype; `default` is the value used for it
    when a data source only provides the image input (None: zeros)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    default: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the ONNX metadata stores under ``extra["inputs"]``)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "default": self.default}


def example_tensors(specs: list[InputSpec], batch: int | None = None) -> tuple:
    """Zero tensors of each spec's shape and dtype (batch dim replaced by `batch` when given)."""
    import torch

    out = []
    for spec in specs:
        shape = (batch, *spec.shape[1:]) if batch is not None else spec.shape
        out.append(torch.zeros(shape, dtype=getattr(torch, spec.dtype)))
    return tuple(out)


def parse_input_shapes(texts: list[str] | str | None) -> "tuple[int, ...] | list[InputSpec] | None":
    """``--input-shape`` values: one plain ``1x1x256x256`` gives a shape; named
    ``image=1x1x256x256`` ``point=1x2[:float32]`` (repeated) give `InputSpec`s in order."""
    if texts is None:
        return None
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 1 and "=" not in texts[0] and ":" not in texts[0]:
        return parse_shape(texts[0])
    specs: list[InputSpec] = []
    for text in texts:
        name, sep, rest = text.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--input-shape '{text}': several inputs need names, e.g. --input-shape image=1x1x256x256 "
                             "--input-shape point=1x2:float32")
        dims, _, dtype = rest.partition(":")
        dtype = dtype.strip() or "float32"
        if dtype not in INPUT_DTYPES:
            raise UsageError(f"--input-shape '{text}': unknown dtype '{dtype}'; use one of {', '.join(INPUT_DTYPES)}")
        shape = parse_shape(dims) if "x" in dims.lower() or "," in dims else _parse_rank1(dims, text)
        specs.append(InputSpec(name.strip(), shape, dtype))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"--input-shape names repeat ({', '.join(names)}); give each input once")
    if len({s.shape[0] for s in specs}) != 1:
        raise UsageError("every --input-shape must have the same batch size (first dim)")
    return specs


def with_input_defaults(shapes: "tuple[int, ...] | list[InputSpec] | None",
                        pairs: list[str]) -> "tuple[int, ...] | list[InputSpec] | None":
    """Attach ``--input-default NAME=JSON`` values to named input specs."""
    if not pairs:
        return shapes
    if not isinstance(shapes, list):
        raise UsageError("--input-default needs named inputs: --input-shape image=1x1x256x256 --input-shape point=1x1x2")
    specs = {s.name: s for s in shapes}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in specs:
            raise UsageError(f"--input-default '{pair}' must be NAME=JSON with NAME one of {', '.join(specs)}")
        if name == shapes[0].name:
            raise UsageError(f"--input-default: '{name}' is the image input, which the data source fills")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise UsageError(f"--input-default '{pair}': the value is not JSON, e.g. point=[[0.5,0.5]]") from None
        import numpy as np

        spec = specs[name]
        try:
            np.broadcast_to(np.asarray(parsed, dtype=spec.dtype), spec.shape[1:])
        except (ValueError, TypeError):
            raise UsageError(f"--input-default '{pair}' does not fit input '{name}' of shape "
                             f"{'x'.join(map(str, spec.shape))}") from None
        specs[name] = dataclasses.replace(spec, default=parsed)
    return [specs[s.name] for s in shapes]


def _parse_rank1(dims: str, text: str) -> tuple[int, ...]:
    try:
        value = int(dims)
    except ValueError:
        raise UsageError(f"bad input shape '{text}': use integers joined by 'x', e.g. point=1x2:float32") from None
    if value < 1:
        raise UsageError(f"bad input shape '{text}': dims must be positive")
    return (value,)


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x1x256x256`` (or ``1,1,256,256``) into a tuple of positive ints."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"bad input shape '{text}': use integers joined by 'x', e.g. 1x1x256x256") from None
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise UsageError(f"bad input shape '{text}': need at least 2 positive dims (N, C, ...), e.g. 1x1x256x256")
    return shape
