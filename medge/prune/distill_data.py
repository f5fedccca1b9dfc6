"""Training data for distillation: an unlimited stream of model-ready batches.

* ``synthetic[:task]`` sources are unlimited: every chunk is freshly generated with its own seed,
  so the student never sees a sample twice and the labels stay valid (task loss allowed).
* Folders, DICOM, WFDB and arrays are finite: the samples are loaded once and every batch is a
  random augmentation of them (flips, shifts, contrast/brightness, noise for images; gain, shift
  and noise for signals).  The dense teacher labels each augmented sample, so augmentation needs
  no label bookkeeping; the source's own labels (if any) are not used on augmented samples.

Fresh synthetic samples whose hash is in the evaluation sets are dropped; finite sources are
split by the caller (`medge.prune.recover`), so that training, selection (early
stopping) and gate data never overlap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from medge.common.errors import DataError
from medge.calibration import load_data

SYNTHETIC_CHUNK = 64


@dataclass
class StreamSummary:
    """What the stream delivered (stable JSON in the prune report)."""

    source: str
    kind: str  # "synthetic" (fresh samples) or "augmented" (finite set, random augmentations)
    samples_drawn: int = 0
    unique_samples: int = 0
    dropped_overlap: int = 0
    labelled: bool = False
    sha256: str = ""  # hash of the sample hashes of everything drawn (or of the base set)
    notes: list[str] = field(default_factory=list)


class DistillStream:
    """Batches of ``(inputs, targets | None)`` as float32 numpy arrays, deterministic from `seed`."""

    def __init__(self, source: str, meta, *, input_name: str, input_shape: tuple[int, ...], seed: int,
                 exclude: set[str] | None = None, base_inputs: np.ndarray | None = None,
                 base_keys: list[str] | None = None) -> None:
        self.source, self.meta = source, meta
        self.input_name, self.input_shape = input_name, tuple(input_shape)
        self.seed = seed
        self.exclude = set(exclude or ())
        self.rng = np.random.default_rng([seed, 0x64697374])
        self.synthetic = str(source).split(":", 1)[0] == "synthetic"
        self.summary = StreamSummary(source=str(source), kind="synthetic" if self.synthetic else "augmented")
        self._hash = hashlib.sha256()
        self._chunk = 0
        self._pool_x: np.ndarray | None = None
        self._pool_y: np.ndarray | None = None
        self._cursor = 0
        if not self.synthetic:
            if base_inputs is None:
                raise DataError(f"'{source}' is a finite source: pass its training samples as base_inputs")
            self._set_base(base_inputs, base_keys or [])

    # ------------------------------------------------------------------ loading
    def _load(self, n: int, seed: int):
        return load_data(self.source, self.meta, input_name=self.input_name, input_shape=self.input_shape,
                         n=n, split="calib", seed=seed)

    def _keep(self, dataset) -> tuple[np.ndarray, np.ndarray | None]:
        keep = [i for i, s in enumerate(dataset.samples) if s.key not in self.exclude]
        self.summary.dropped_overlap += len(dataset.samples) - len(keep)
        for i in keep:
            self._hash.update(dataset.samples[i].key.encode())
        x = dataset.inputs()[keep]
        targets = dataset.targets()
        y = None if targets is None else np.asarray(targets, dtype=np.float32)[keep]
        return x, y

    def _set_base(self, x: np.ndarray, keys: list[str]) -> None:
        if len(x) == 0:
            raise DataError(f"no distillation samples left in '{self.source}' once the evaluation samples are "
                            "held out; give more images or a separate --eval source")
        for key in keys:
            self._hash.update(key.encode())
        self._pool_x, self._pool_y = x.astype(np.float32), None
        self.summary.unique_samples = len(x)
        self.summary.sha256 = self._hash.hexdigest()
        if len(x) < 64:
            self.summary.notes.append(f"only {len(x)} distillation samples in '{self.source}': every batch is an "
                                      "augmentation of them; more images give a better student")

    def _refill_synthetic(self) -> None:
        dataset = self._load(SYNTHETIC_CHUNK, int(np.random.SeedSequence([self.seed, self._chunk, 0x7072]).generate_state(1)[0]))
        self._chunk += 1
        self._pool_x, self._pool_y = self._keep(dataset)
        self._cursor = 0
        self.summary.unique_samples += len(self._pool_x)
        self.summary.labelled = self._pool_y is not None
        self.summary.sha256 = self._hash.hexdigest()

    # ------------------------------------------------------------------ batches
    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The next `size` training inputs (and targets for fresh synthetic samples)."""
        if self.synthetic:
            xs, ys = [], []
            while sum(len(x) for x in xs) < size:
                if self._pool_x is None or self._cursor >= len(self._pool_x):
                    self._refill_synthetic()
                take = min(size - sum(len(x) for x in xs), len(self._pool_x) - self._cursor)
                xs.append(self._pool_x[self._cursor:self._cursor + take])
                if self._pool_y is not None:
                    ys.append(self._pool_y[self._cursor:self._cursor + take])
                self._cursor += take
            self.summary.samples_drawn += size
            return np.concatenate(xs), (np.concatenate(ys) if ys else None)
        idx = self.rng.integers(0, len(self._pool_x), size=size)
        self.summary.samples_drawn += size
        return augment(self._pool_x[idx], self.rng), None


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random label-agnostic augmentation of a batch of model-ready inputs (N, C, ...)."""
    out = x.astype(np.float32, copy=True)
    n = len(out)
    spatial = out.ndim - 2
    scale = out.reshape(n, -1).std(axis=1).reshape((n,) + (1,) * (out.ndim - 1)) + 1e-6
    for i in range(n):
        if spatial == 2 and rng.random() < 0.5:
            out[i] = out[i][..., ::-1]
        shifts = [int(rng.integers(-s // 16, s // 16 + 1)) for s in out.shape[2:]]
        out[i] = np.roll(out[i], shifts, axis=tuple(range(1, out.ndim - 1)))
    gain = rng.uniform(0.85, 1.15, size=(n,) + (1,) * (out.ndim - 1)).astype(np.float32)
    offset = rng.normal(0.0, 0.1, size=(n,) + (1,) * (out.ndim - 1)).astype(np.float32) * scale
    noise = rng.normal(0.0, 0.05, size=out.shape).astype(np.float32) * scale
    return (out * gain + offset + noise).astype(np.float32)
