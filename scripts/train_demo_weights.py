#!/usr/bin/env python
"""Train the zoo's DEMO weights on synthetic data and record their test metric.

    python scripts/train_demo_weights.py [--model NAME ...] [--out DIR] [--threads N]
    python scripts/train_demo_weights.py --update-complexity   # after changing an architecture

Reproducible: fixed torch seed, deterministic synthetic data (train seed 1, test seed 2, which
never share a sample), fixed step counts.  Each model trains in a few CPU minutes, is saved as
safetensors (atomically) to ``<out>/<name>.safetensors`` and evaluated on the separate test split
with its task metric (macro AUROC, Dice, mean per-lead Pearson r).  The metric goes into
``<out>/metrics.json``, which the zoo cards read.  DEMO weights trained on synthetic data - not
for clinical use.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

TRAIN_SEED, TEST_SEED, TORCH_SEED, EASY_SEED = 1, 2, 0, 3
EASY_DIFFICULTY = 0.6
MAX_WEIGHTS_BYTES = 5 * 1024 * 1024
FIT_TRAINED = ("ecg-3to12",)  # trained with `medge ecg fit`'s trainer (see _train_like_fit)
VAL_SHARE, PATIENCE = 0.1, 3


@dataclass(frozen=True)
class Recipe:
    """How one demo model is trained and evaluated."""

    n_train: int
    n_test: int
    epochs: int
    batch: int
    lr: float
    loss: str  # "bce" | "dice_bce" | "l1"
    crop: int | None = None  # train on random crops (fully convolutional models only)
    easy_share: float = 0.0  # curriculum: this share of the training set has more obvious findings
    prompt: bool = False  # promptable segmenter: lesion frames only, one click inside the lesion per frame


RECIPES: dict[str, Recipe] = {
    "us-frame-screen": Recipe(n_train=1200, n_test=400, epochs=4, batch=32, lr=3e-3, loss="bce"),
    "cxr-densenet-tiny": Recipe(n_train=1600, n_test=300, epochs=8, batch=16, lr=3e-3, loss="bce", easy_share=0.4),
    "cxr-hybrid-vit": Recipe(n_train=1600, n_test=300, epochs=8, batch=16, lr=2e-3, loss="bce", easy_share=0.4),
    "us-lesion-unet": Recipe(n_train=480, n_test=100, epochs=40, batch=8, lr=3e-3, loss="dice_bce", crop=128),
    # ecg-3to12 trains with `medge ecg fit`'s trainer (FIT_TRAINED): its batch, crop and loss; at most `epochs`
    "ecg-3to12": Recipe(n_train=400, n_test=200, epochs=4, batch=16, lr=2e-3, loss="l1", crop=1024),
    # research architectures at 64x64 (CPU minutes each)
    "cxr-medvit-kan": Recipe(n_train=1600, n_test=300, epochs=8, batch=16, lr=2e-3, loss="bce", easy_share=0.4),
    "us-dct-vit": Recipe(n_train=1200, n_test=200, epochs=10, batch=32, lr=3e-3, loss="bce"),
    "us-xlstm-unet": Recipe(n_train=240, n_test=100, epochs=6, batch=16, lr=3e-3, loss="dice_bce"),
    "ecg-mamba-3to12": Recipe(n_train=128, n_test=100, epochs=3, batch=16, lr=4e-3, loss="l1", crop=500),
    "us-lesion-sam": Recipe(n_train=300, n_test=120, epochs=6, batch=16, lr=3e-3, loss="dice_bce", prompt=True),
}


def _generate(card, n: int, seed: int, **kw):
    """Synthetic data at the card's input size (the generators draw images at any size)."""
    from medge.calibration.synthetic import generate

    if card.preprocessing["kind"] == "image":
        kw["size"] = card.input_shape[-1]
    x, y = generate(card.synthetic_task, n, seed=seed, **kw)
    return x, y


def model_ready(card, raw: np.ndarray) -> np.ndarray:
    """Apply the card's preprocessing to raw synthetic inputs; add the channel axis for images."""
    pre = card.preprocessing
    if pre["kind"] == "image":
        mean = np.float32(pre["mean"][0])
        std = np.float32(pre["std"][0])
        return ((raw[:, None] - mean) / std).astype(np.float32)
    return (raw * np.float32(pre.get("scale", 1.0))).astype(np.float32)


def targets_for(card, raw_targets: np.ndarray) -> np.ndarray:
    """Targets shaped like the model output."""
    if card.task == "segmentation":
        return raw_targets[:, None].astype(np.float32)
    if raw_targets.ndim == 1:
        return raw_targets[:, None].astype(np.float32)
    return raw_targets.astype(np.float32)


def _loss(kind: str, out, target):
    import torch.nn.functional as F

    if kind == "l1":
        return F.l1_loss(out, target)
    probs = out.clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(probs, target)
    if kind == "bce":
        return bce
    # batch-level soft Dice: stable when some crops hold no lesion at all
    soft_dice = (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    return bce + (1 - soft_dice)


def _crop(x, y, size: int, gen):
    import torch

    if x.dim() == 4:  # images: same random window for input and mask
        h, w = x.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        return x[..., top:top + size, left:left + size], y[..., top:top + size, left:left + size]
    start = int(torch.randint(0, x.shape[-1] - size + 1, (1,), generator=gen))
    return x[..., start:start + size], y[..., start:start + size]


def evaluate(card, model, x, y: np.ndarray, batch: int = 16) -> dict:
    """Run the model on the test split (`x`: an array, or a tuple of arrays for several inputs)
    and compute the card's task metric (+ details)."""
    import torch

    from medge.evaluate import metrics

    model.eval()
    xs = x if isinstance(x, tuple) else (x,)
    outs = []
    with torch.no_grad():
        for i in range(0, len(xs[0]), batch):
            outs.append(model(*(torch.from_numpy(a[i:i + batch]) for a in xs)).numpy())
    out = np.concatenate(outs)
    if card.task == "segmentation":
        return {"name": "dice", "value": metrics.dice(out, y), "iou": metrics.iou(out, y)}
    if card.task == "ecg-reconstruction":
        per_lead = metrics.pearson_per_lead(out, y)
        return {"name": "pearson", "value": float(np.nanmean(per_lead)), "per_label": dict(zip(card.labels, per_lead)),
                "rmse_uv": metrics.rmse_uv(out, y), "mae_uv": metrics.mae_uv(out, y)}
    per_label = metrics.auroc_per_label(out, y)
    return {"name": "auroc", "value": metrics.auroc(out, y), "per_label": dict(zip(card.labels, per_label)),
            "sensitivity_at_90_specificity": metrics.sensitivity_at_specificity(out, y, 0.9)}


def scaled(recipe: Recipe, scale: float) -> Recipe:
    """A smaller (scale < 1) version of a recipe, for smoke tests."""
    if scale == 1.0:
        return recipe
    return Recipe(**{**asdict(recipe), "n_train": max(recipe.batch, int(recipe.n_train * scale)),
                     "n_test": max(8, int(recipe.n_test * scale)), "epochs": max(1, int(recipe.epochs * scale))})


def _train_generic(name: str, recipe: Recipe, x_train, y_train, p_train, log, started: float):
    """The generic recipe: AdamW + one-cycle over `recipe.epochs`, the recipe's loss and crops."""
    import torch

    from medge.zoo import build_model

    torch.manual_seed(TORCH_SEED)
    gen = torch.Generator().manual_seed(TORCH_SEED)
    model = build_model(name, pretrained=False).train()
    image_model = x_train.ndim == 4
    if image_model:  # channels-last convolutions train ~30 % faster on CPU
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = math.ceil(len(x_train) / recipe.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                pct_start=0.15)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    pt = torch.from_numpy(p_train) if p_train is not None else None
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), recipe.batch):
            idx = order[i:i + recipe.batch]
            xb, yb = xt[idx], yt[idx]
            if recipe.crop:
                xb, yb = _crop(xb, yb, recipe.crop, gen)
            if image_model:
                xb = xb.contiguous(memory_format=torch.channels_last)
            out = model(xb, pt[idx]) if pt is not None else model(xb)
            loss = _loss(recipe.loss, out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"{name}: epoch {epoch + 1}/{recipe.epochs} loss {total / len(xt):.4f} ({time.time() - started:.0f}s)")

    return model


def _stream_filtered(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets through the live stream's filter chain (`medge.apps.ecg.filters`), record by record."""
    from medge.apps.ecg.filters import filter_record
    from medge.calibration.synthetic.ecg import FS_HZ

    both = np.stack([filter_record(np.concatenate([a, b]), FS_HZ) for a, b in zip(x, y)]).astype(np.float32)
    return both[:, :x.shape[1]], both[:, x.shape[1]:]


def _train_like_fit(x: np.ndarray, y: np.ndarray, recipe: Recipe, log):
    """`medge.apps.ecg.fit.train_net` from scratch: least-squares start, per-lead variance-weighted
    loss, augmentation, early stopping on the last `VAL_SHARE` of the training records."""
    from medge.apps.ecg.fit import FitData, Schedule, fit_linear, train_net

    n_val = max(1, int(len(x) * VAL_SHARE))
    train = FitData(x[:-n_val], y[:-n_val], [str(k) for k in range(len(x) - n_val)])
    val = FitData(x[-n_val:], y[-n_val:], [str(k) for k in range(n_val)])

    def progress(epoch: int, epochs: int, loss: float, t0: float) -> None:
        log(f"ecg fit: epoch {epoch}/{epochs} loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)")

    net, facts = train_net(train, fit_linear(train), init="scratch", log=progress, val=val,
                           schedule=Schedule(recipe.epochs, TORCH_SEED, lr=recipe.lr, patience=PATIENCE))
    return net, {"trainer": "medge.apps.ecg.fit.train_net", "val_records": n_val, "filtered": True, **facts}


def train_one(name: str, out_dir: Path, log=print, scale: float = 1.0) -> dict:
    """Train, save and evaluate one demo model; returns its metrics.json entry."""
    from safetensors.torch import save_file

    from medge.common.fileio import atomic_path
    from medge.zoo import get_card

    card = get_card(name)
    recipe = scaled(RECIPES[name], scale)
    started = time.time()
    n_easy = int(recipe.n_train * recipe.easy_share)
    x_raw, y_raw = _generate(card, recipe.n_train - n_easy, TRAIN_SEED)
    if n_easy:  # same task, findings drawn ~1.7x more conspicuous (a separate seed stream)
        x_easy, y_easy = _generate(card, n_easy, EASY_SEED, difficulty=EASY_DIFFICULTY)
        x_raw, y_raw = np.concatenate([x_raw, x_easy]), np.concatenate([y_raw, y_easy])
    x_train, y_train = model_ready(card, x_raw), targets_for(card, y_raw)
    x_raw, y_raw = _generate(card, recipe.n_test, TEST_SEED)
    x_test, y_test = model_ready(card, x_raw), targets_for(card, y_raw)
    del x_raw, y_raw
    p_train = p_test = None
    if recipe.prompt:  # frames with a lesion only, each with one click inside it
        keep, keep_test = y_train.reshape(len(y_train), -1).any(1), y_test.reshape(len(y_test), -1).any(1)
        x_train, y_train, x_test, y_test = x_train[keep], y_train[keep], x_test[keep_test], y_test[keep_test]
        from medge.zoo.promptable import lesion_clicks as clicks

        p_train = clicks(y_train, np.random.default_rng(TRAIN_SEED))
        p_test = clicks(y_test, np.random.default_rng(TEST_SEED))
    log(f"{name}: data ready in {time.time() - started:.0f}s (train {x_train.shape}, test {x_test.shape})")

    if name in FIT_TRAINED:  # trained the way `medge ecg fit` trains, on what the app feeds it
        x_train, y_train = _stream_filtered(x_train, y_train)
        x_test, y_test = _stream_filtered(x_test, y_test)
        model, fit_facts = _train_like_fit(x_train, y_train, recipe, log)
    else:
        model, fit_facts = _train_generic(name, recipe, x_train, y_train, p_train, log, started), {}

    result = evaluate(card, model, (x_test, p_test) if p_test is not None else x_test, y_test)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    weights = out_dir / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"model": name, "note": card.note})
        if tmp.stat().st_size > MAX_WEIGHTS_BYTES:
            raise SystemExit(f"{name}: weights are {tmp.stat().st_size} bytes, over the 5 MB demo limit")
        tmp.chmod(0o644)  # package data: world-readable like the rest of the tree
    entry = {
        **result,
        "n": recipe.n_test,
        "data": f"synthetic:{card.synthetic_task}",
        "test_seed": TEST_SEED,
        **({"test_data": "inputs and targets through the live stream's filters, as the app feeds the model"}
           if fit_facts.get("filtered") else {}),
        "train": {**asdict(recipe), "seed": TRAIN_SEED, "torch_seed": TORCH_SEED,
                  "seconds": round(time.time() - started, 1), **fit_facts},
        "note": "DEMO weights trained on synthetic data - not for clinical use.",
    }
    log(f"{name}: {entry['name']} = {entry['value']:.4f} on {recipe.n_test} test samples; wrote {weights}")
    return entry


def update_metrics(out_dir: Path, name: str, entry: dict) -> None:
    """Merge one model's entry into ``<out_dir>/metrics.json`` atomically."""
    from medge.common.fileio import write_json_atomic
    from medge.common.reports import _plain

    path = out_dir / "metrics.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = _plain(entry)
    write_json_atomic(path, data)
    path.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    from medge.zoo.catalog import WEIGHTS_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(RECIPES), help="model(s) to train (default: all)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: medge/zoo/weights)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink data/epochs for a smoke test (default 1)")
    parser.add_argument("--update-complexity", action="store_true",
                        help="only recount params/MACs of every zoo model into medge/zoo/complexity.json")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.update_complexity:
        from medge.common.fileio import write_json_atomic
        from medge.zoo import MODELS, measure_complexity
        from medge.zoo.catalog import COMPLEXITY_FILE

        write_json_atomic(COMPLEXITY_FILE, {name: measure_complexity(name) for name in MODELS.names()})
        COMPLEXITY_FILE.chmod(0o644)
        print(f"wrote {COMPLEXITY_FILE}")
        return 0
    for name in args.model or sorted(RECIPES):
        entry = train_one(name, args.out, log=lambda m: print(m, flush=True), scale=args.scale)
        update_metrics(args.out, name, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
