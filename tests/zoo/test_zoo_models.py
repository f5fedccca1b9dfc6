"""Every registered zoo model: builds, has its declared shapes, loads its weights, exports to ONNX.

`MODEL_EXPECTATIONS` must list every name in `medge.zoo.MODELS`: the coverage test fails when a
model is registered without being added here.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from medge.zoo import MODELS, build_model, get_card, weights_path
from medge.zoo.catalog import COMPLEXITY_FILE

torch = pytest.importorskip("torch")

FLOORS = {"cxr-medvit-kan": 0.58, "us-dct-vit": 0.55, "us-xlstm-unet": 0.4, "ecg-mamba-3to12": 0.3, "us-lesion-sam": 0.4}

# name → (input shape, output shape, ships demo weights, minimum demo metric on a fresh test set)
MODEL_EXPECTATIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...], bool, float | None]] = {
    "cxr-densenet121": ((1, 1, 224, 224), (1, 14), False, None),
    "cxr-densenet-tiny": ((1, 1, 224, 224), (1, 4), True, 0.8),
    "us-frame-screen": ((1, 1, 128, 128), (1, 1), True, 0.8),
    "cxr-hybrid-vit": ((1, 1, 224, 224), (1, 4), True, 0.8),
    "us-lesion-unet": ((1, 1, 256, 256), (1, 1, 256, 256), True, 0.75),
    "ecg-3to12": ((1, 3, 5000), (1, 12, 5000), True, 0.85),
    # research architectures (issue 10); floors well below the card's demo metric
    "cxr-medvit-kan": ((1, 1, 64, 64), (1, 4), True, FLOORS["cxr-medvit-kan"]),
    "us-dct-vit": ((1, 1, 64, 64), (1, 1), True, FLOORS["us-dct-vit"]),
    "us-xlstm-unet": ((1, 1, 64, 64), (1, 1, 64, 64), True, FLOORS["us-xlstm-unet"]),
    "ecg-mamba-3to12": ((1, 3, 5000), (1, 12, 5000), True, FLOORS["ecg-mamba-3to12"]),
    "us-lesion-sam": ((1, 1, 64, 64), (1, 1, 64, 64), True, FLOORS["us-lesion-sam"]),
    "us-lesion-sam-encoder": ((1, 1, 64, 64), (1, 64, 8, 8), False, None),  # shares us-lesion-sam's weights
    "us-lesion-sam-decoder": ((1, 64, 8, 8), (1, 1, 64, 64), False, None),
    "ecg-mamba-3to12-step": ((1, 1, 32), (1, 1, 32), False, None),  # shares ecg-mamba-3to12's weights
    "us-swinunetr": ((1, 1, 64, 64), (1, 1, 64, 64), False, None),
    "us-mednext": ((1, 1, 64, 64), (1, 1, 64, 64), False, None),
    "us-unetr": ((1, 1, 64, 64), (1, 1, 64, 64), False, None),
}


def test_every_registered_model_has_a_test():
    assert sorted(MODEL_EXPECTATIONS) == MODELS.names()


# the full DenseNet-121 takes minutes to build and export on a shared 2-core machine; MONAI imports
# cost 10-20 s; the Mamba scan unrolls 20 chunks at export
SLOW_MODELS = {"cxr-densenet121", "us-swinunetr", "us-mednext", "us-unetr", "ecg-mamba-3to12"}


def _inputs(card, batch: int):
    from medge.zoo import input_shapes

    gen = torch.Generator().manual_seed(batch)
    return tuple(torch.rand((batch, *shape[1:]), generator=gen) for shape in input_shapes(card))


@pytest.fixture(scope="module", params=[
    pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name for name in MODELS.names()
])
def built(request):
    torch.set_num_threads(1)
    name = request.param
    return name, get_card(name), build_model(name)


def test_card_declares_shapes_and_preprocessing(built):
    name, card, _ = built
    in_shape, out_shape, _, _ = MODEL_EXPECTATIONS[name]
    assert card.input_shape == in_shape and card.output_shape == out_shape
    assert card.task in ("multilabel-classification", "classification", "segmentation", "ecg-reconstruction")
    pre = card.preprocessing
    if pre["kind"] == "image":
        assert (pre["channels"], pre["height"], pre["width"]) == in_shape[1:]
        assert pre["intensity"] == "unit" and len(pre["mean"]) == len(pre["std"]) == 1
    elif pre["kind"] == "embedding":  # fed by another zoo model's output (or, with "tensor", an inner tensor)
        assert "tensor" in pre or tuple(get_card(pre["source"]).output_shape) == in_shape
        assert get_card(pre["source"])
    else:
        assert pre["leads"] == ["II", "V1", "V5"] and pre["samples"] == in_shape[-1] and pre["units"] == "mV"
    assert len(card.labels) == (out_shape[1] if card.task != "segmentation" else 1)


def test_forward_gives_declared_output(built):
    name, card, model = built
    assert not model.training
    with torch.no_grad():
        y = model(*_inputs(card, 2))
    if isinstance(y, tuple):  # a recurrent step: (output, *states); the output is declared
        y = y[0]
    assert tuple(y.shape) == (2, *card.output_shape[1:])
    assert torch.isfinite(y).all()
    if card.task != "ecg-reconstruction" and card.output_names != ("embedding",):  # probabilities: sigmoid inside
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_weights_match_card(built):
    name, card, model = built
    ships = MODEL_EXPECTATIONS[name][2]
    path = weights_path(card)
    if not ships:
        assert path is None
        assert card.demo_metric is None or "shared with" in card.note
        return
    assert path is not None and path.is_file(), f"demo weights for {name} missing: run scripts/train_demo_weights.py"
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert "not for clinical use" in card.note
    from safetensors.torch import load_file

    state = load_file(str(path))
    for key, value in model.state_dict().items():  # build_model really loaded these weights
        assert torch.equal(state[key], value), key
    assert card.demo_metric and card.demo_metric["n"] >= 100


def test_complexity_file_matches_counter(built):
    from medge.zoo import input_shapes
    from medge.zoo.complexity import count_macs, count_params

    name, card, model = built
    stored = json.loads(COMPLEXITY_FILE.read_text())[name]
    assert stored == {"params": count_params(model), "macs": count_macs(model, input_shapes(card))}
    assert (card.params, card.macs) == (stored["params"], stored["macs"])


def test_exports_with_dynamic_batch_and_matches_onnxruntime(built):
    import onnxruntime as ort

    name, card, model = built
    buf = io.BytesIO()
    names = [card.input_name] + [i["name"] for i in card.extra_inputs]
    torch.onnx.export(model, _inputs(card, 1), buf, dynamo=False, opset_version=17, input_names=names,
                      output_names=list(card.output_names),
                      dynamic_axes={n: {0: "batch"} for n in [*names, card.output_names[0]]})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    xs = _inputs(card, 3)
    with torch.no_grad():
        expected = model(*xs)
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    got = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_demo_weights_work_on_fresh_synthetic_data(built):
    """The shipped weights reach a useful metric on data they were never trained on (seed 7)."""
    name, card, model = built
    floor = MODEL_EXPECTATIONS[name][3]
    if floor is None:
        pytest.skip(f"{name} ships without demo weights (nothing to evaluate)")
    from medge.calibration.synthetic import generate
    from medge.evaluate import metrics

    n = {"us-lesion-unet": 24, "ecg-3to12": 24, "ecg-mamba-3to12": 24}.get(name, 96)
    pre = card.preprocessing
    size = {"size": card.input_shape[-1]} if pre["kind"] == "image" else {}
    raw, targets = generate(card.synthetic_task, n, seed=7, **size)
    if pre["kind"] == "image":
        x = (raw[:, None] - pre["mean"][0]) / pre["std"][0]
    else:
        x = raw * pre["scale"]
    inputs = [torch.from_numpy(x.astype(np.float32))]
    if card.extra_inputs:  # the promptable segmenter: lesion frames, one click inside each lesion
        from medge.zoo.promptable import lesion_clicks as clicks

        keep = targets.reshape(len(targets), -1).any(1)
        inputs, targets = [inputs[0][keep]], targets[keep]
        inputs.append(torch.from_numpy(clicks(targets, np.random.default_rng(7))))
    with torch.no_grad():
        out = model(*inputs).numpy()
    if card.task == "segmentation":
        value = metrics.dice(out, targets[:, None])
    elif card.task == "ecg-reconstruction":
        value = metrics.pearson(out, targets)
    else:
        value = metrics.auroc(out, targets.reshape(len(targets), -1))
    assert value >= floor, f"{name}: {value:.3f} < {floor}"
