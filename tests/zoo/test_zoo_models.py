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

# name → (input shape, output shape, ships demo weights, minimum demo metric on a fresh test set)
MODEL_EXPECTATIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...], bool, float | None]] = {
    "cxr-densenet121": ((1, 1, 224, 224), (1, 14), False, None),
    "cxr-densenet-tiny": ((1, 1, 224, 224), (1, 4), True, 0.8),
    "us-frame-screen": ((1, 1, 128, 128), (1, 1), True, 0.8),
    "cxr-hybrid-vit": ((1, 1, 224, 224), (1, 4), True, 0.8),
    "us-lesion-unet": ((1, 1, 256, 256), (1, 1, 256, 256), True, 0.75),
    "ecg-3to12": ((1, 3, 5000), (1, 12, 5000), True, 0.85),
}


def test_every_registered_model_has_a_test():
    assert sorted(MODEL_EXPECTATIONS) == MODELS.names()


# the full DenseNet-121 takes minutes to build and export on a shared 2-core machine
SLOW_MODELS = {"cxr-densenet121"}


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
    else:
        assert pre["leads"] == ["II", "V1", "V5"] and pre["samples"] == in_shape[-1] and pre["units"] == "mV"
    assert len(card.labels) == (out_shape[1] if card.task != "segmentation" else 1)


def test_forward_gives_declared_output(built):
    name, card, model = built
    assert not model.training
    x = torch.randn(2, *card.input_shape[1:])
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, *card.output_shape[1:])
    assert torch.isfinite(y).all()
    if card.task != "ecg-reconstruction":  # probabilities: sigmoid inside the model
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_weights_match_card(built):
    name, card, model = built
    ships = MODEL_EXPECTATIONS[name][2]
    path = weights_path(card)
    if not ships:
        assert path is None and card.demo_metric is None
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
    from medge.zoo.complexity import count_macs, count_params

    name, card, model = built
    stored = json.loads(COMPLEXITY_FILE.read_text())[name]
    assert stored == {"params": count_params(model), "macs": count_macs(model, card.input_shape)}
    assert (card.params, card.macs) == (stored["params"], stored["macs"])


def test_exports_with_dynamic_batch_and_matches_onnxruntime(built):
    import onnxruntime as ort

    name, card, model = built
    buf = io.BytesIO()
    example = torch.randn(*card.input_shape)
    torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=17, input_names=[card.input_name],
                      output_names=list(card.output_names),
                      dynamic_axes={card.input_name: {0: "batch"}, card.output_names[0]: {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(3, *card.input_shape[1:])
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {card.input_name: x.numpy()})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-3)


def test_demo_weights_work_on_fresh_synthetic_data(built):
    """The shipped weights reach a useful metric on data they were never trained on (seed 7)."""
    name, card, model = built
    floor = MODEL_EXPECTATIONS[name][3]
    if floor is None:
        pytest.skip(f"{name} ships without demo weights (nothing to evaluate)")
    from medge.calibration.synthetic import generate
    from medge.quantize import metrics

    n = {"us-lesion-unet": 24, "ecg-3to12": 24}.get(name, 96)
    raw, targets = generate(card.synthetic_task, n, seed=7)
    pre = card.preprocessing
    if pre["kind"] == "image":
        x = (raw[:, None] - pre["mean"][0]) / pre["std"][0]
    else:
        x = raw * pre["scale"]
    with torch.no_grad():
        out = model(torch.from_numpy(x.astype(np.float32))).numpy()
    if card.task == "segmentation":
        value = metrics.dice(out, targets[:, None])
    elif card.task == "ecg-reconstruction":
        value = metrics.pearson(out, targets)
    else:
        value = metrics.auroc(out, targets.reshape(len(targets), -1))
    assert value >= floor, f"{name}: {value:.3f} < {floor}"
