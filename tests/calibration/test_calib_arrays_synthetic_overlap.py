"""NPY/NPZ and synthetic sources, overlap detection, and loading against a real ONNX file."""

from __future__ import annotations

import numpy as np
import pytest
from calib_fixtures import ecg_meta, image_meta, image_shape, write_png

from medge.calibration import check_overlap, load_data, load_data_for_onnx
from medge.calibration.synthetic_source import split_seed
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta


def _load(source, meta, **kw):
    return load_data(str(source), meta, input_name="image", input_shape=image_shape(meta), **kw)


def test_npz_inputs_targets_are_preprocessed_and_stratified(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = np.zeros((30, 2), dtype=np.float32)
    y[:6, 0] = 1  # 6 effusion, 24 none
    np.savez(tmp_path / "d.npz", inputs=x, targets=y)
    meta = image_meta(size=8, mean=(0.5,), std=(0.25,))
    ds = _load(tmp_path / "d.npz", meta, n=10, seed=1)
    rep = ds.report
    assert rep.kind == "arrays" and (rep.found, rep.used) == (30, 10) and rep.labels_from == "arrays"
    assert rep.class_counts == {"(none)": 8, "effusion": 2}
    for s in ds.samples:
        i = int(s.source.split("[")[1].rstrip("]"))
        np.testing.assert_allclose(s.feeds["image"][0, 0], (x[i] / 255.0 - 0.5) / 0.25, atol=1e-6)
        assert s.target.tolist() == y[i].tolist()


def test_npz_alternative_keys_npy_and_errors(tmp_path):
    meta = image_meta(size=8, mean=(0.0,), std=(1.0,))
    x = np.linspace(0, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 1, 8, 8)  # (n, C, H, W) floats in [0, 1]
    np.savez(tmp_path / "xy.npz", x=x, y=np.array([0, 1, 0, 1]))
    ds = _load(tmp_path / "xy.npz", image_meta(task="classification", labels=("lesion",), size=8,
                                               mean=(0.0,), std=(1.0,)))
    assert ds.report.class_counts == {"negative": 2, "positive": 2}
    np.save(tmp_path / "x.npy", x)
    got = _load(tmp_path / "x.npy", meta, n=4).inputs()
    assert got.shape == (4, 1, 8, 8) and sorted(got[:, 0, 0, 0].tolist()) == sorted(x[:, 0, 0, 0].tolist())

    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(DataError, match=r"\['images'\].*inputs or x"):
        _load(tmp_path / "bad.npz", meta)
    np.savez(tmp_path / "len.npz", inputs=x, targets=np.zeros(3))
    with pytest.raises(DataError, match="4 inputs but 3 targets"):
        _load(tmp_path / "len.npz", meta)
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 nope")
    with pytest.raises(DataError, match="cannot read corrupt.npz"):
        _load(tmp_path / "corrupt.npz", meta)


def test_preprocessed_npz_and_model_without_metadata(tmp_path):
    meta = image_meta(size=8, mean=(0.5,), std=(0.25,))
    ready = np.random.default_rng(2).normal(size=(5, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "ready.npz", inputs=ready, preprocessed=True)
    ds = _load(tmp_path / "ready.npz", meta)
    assert np.allclose(np.sort(ds.inputs().ravel()), np.sort(ready.ravel()))
    ds = load_data(str(tmp_path / "ready.npz"), None, input_name="image", input_shape=(1, 1, 8, 8))
    assert len(ds) == 5
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="no medge preprocessing metadata"):
        load_data(str(tmp_path / "a.png"), None, input_name="image", input_shape=(1, 1, 8, 8))


def test_signal_npz_scale_and_shape_check(tmp_path):
    sig = np.random.default_rng(3).normal(size=(4, 3, 1000))
    np.savez(tmp_path / "ecg.npz", inputs=sig, targets=np.zeros((4, 12, 1000)))
    meta = ecg_meta(samples=1000, scale=0.5)
    ds = load_data(str(tmp_path / "ecg.npz"), meta, input_name="ecg", input_shape=(1, 3, 1000))
    for s in ds.samples:
        i = int(s.source.split("[")[1].rstrip("]"))
        np.testing.assert_allclose(s.feeds["ecg"][0], 0.5 * sig[i], rtol=1e-6, atol=1e-6)
        assert s.target.shape == (12, 1000)
    np.savez(tmp_path / "short.npz", inputs=sig[:, :, :900])
    with pytest.raises(DataError, match="no decodable samples.*\\(leads, 1000\\)"):
        load_data(str(tmp_path / "short.npz"), meta, input_name="ecg", input_shape=(1, 3, 1000))


def test_overlap_is_found_across_formats_and_can_be_allowed(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    for i, img in enumerate(images):
        write_png(tmp_path / "calib" / f"{i}.png", img)
    np.savez(tmp_path / "eval.npz", inputs=images[4:])  # two images reused as evaluation data
    np.savez(tmp_path / "fresh.npz", inputs=rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
    meta = image_meta(size=8)
    calib = _load(tmp_path / "calib", meta)
    leaky = _load(tmp_path / "eval.npz", meta, split="eval")
    with pytest.raises(DataError, match="share 2 of 2 samples.*--allow-overlap") as err:
        check_overlap(calib, leaky)
    assert "\n" not in str(err.value)
    assert check_overlap(calib, leaky, allow=True) == 2
    assert check_overlap(calib, _load(tmp_path / "fresh.npz", meta, split="eval")) == 0


def test_synthetic_splits_are_disjoint_and_deterministic():
    meta = image_meta(task="classification", labels=("lesion",), size=128, mean=(0.25,), std=(0.2,))
    meta.preprocessing["modality"] = "US"
    calib = _load("synthetic:us-frame", meta, n=12, seed=0)
    again = _load("synthetic:us-frame", meta, n=12, seed=0)
    evaluation = _load("synthetic", meta, n=12, seed=0, split="eval")  # task inferred from task/modality
    assert calib.report.synthetic_task == evaluation.report.synthetic_task == "us-frame"
    assert calib.sha256 == again.sha256 and calib.sha256 != evaluation.sha256
    assert check_overlap(calib, evaluation) == 0
    assert calib.report.used == 12 and sum(calib.report.class_counts.values()) == 12
    assert calib.targets().shape == (12,)


def test_synthetic_with_zoo_metadata_applies_mean_std():
    from medge.calibration.synthetic import generate
    from medge.zoo import get_card

    card = get_card("cxr-densenet-tiny")
    meta = ModelMeta(model=card.name, task=card.task, labels=list(card.labels), input_layout=card.input_layout,
                     preprocessing=dict(card.preprocessing))
    ds = load_data("synthetic", meta, input_name=card.input_name, input_shape=card.input_shape, n=4, seed=7)
    assert ds.report.synthetic_task == "cxr" and ds.targets().shape == (4, len(card.labels))
    raw, targets = generate("cxr", 4, split_seed(7, "calib"))
    mean, std = card.preprocessing["mean"][0], card.preprocessing["std"][0]
    got = {s.source: s for s in ds.samples}
    for i in range(4):
        sample = got[f"synthetic:cxr[{i}]"]
        np.testing.assert_allclose(sample.feeds[card.input_name][0, 0], (raw[i] - mean) / std, atol=1e-5)
        assert sample.target.tolist() == targets[i].tolist()


def test_synthetic_targets_that_do_not_fit_the_labels_are_dropped_with_a_note():
    meta = image_meta(labels=[f"finding{i}" for i in range(14)], size=32)  # a 14-label CheXNet-style model
    ds = _load("synthetic:cxr", meta, n=3)
    assert ds.targets() is None and ds.report.class_counts is None and len(ds) == 3
    assert ds.report.notes and "targets dropped" in ds.report.notes[0]


def test_synthetic_errors():
    meta = image_meta(size=8)
    with pytest.raises(DataError, match="unknown synthetic task 'cxrr'; did you mean 'cxr'"):
        _load("synthetic:cxrr", meta)
    with pytest.raises(DataError, match="makes signals.*synthetic:cxr"):
        _load("synthetic:ecg", meta)
    with pytest.raises(DataError, match="unknown split"):
        _load("synthetic:cxr", meta, split="train")


def _tiny_onnx(path, meta: ModelMeta | None, size: int = 8) -> None:
    import onnx
    from onnx import TensorProto, helper

    from medge.common.metadata import embed_metadata

    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["image"], ["probabilities"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1, size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if meta is not None:
        embed_metadata(model, meta)
    onnx.save(model, str(path))


def test_load_data_for_onnx_reads_metadata_and_input(tmp_path):
    for i in range(3):
        write_png(tmp_path / "imgs" / f"{i}.png", np.full((16, 16), 60 * i, dtype=np.uint8))
    meta = image_meta(size=8, mean=(0.5,), std=(0.25,))
    _tiny_onnx(tmp_path / "m.onnx", meta)
    ds = load_data_for_onnx(str(tmp_path / "imgs"), tmp_path / "m.onnx", n=2, split="eval")
    assert ds.report.input_name == "image" and ds.report.input_shape == [1, 1, 8, 8]
    assert len(ds) == 2 and all(f["image"].shape == (1, 1, 8, 8) for f in ds)
    batches = list(ds.batches(2))
    assert len(batches) == 1 and batches[0]["image"].shape == (2, 1, 8, 8)

    _tiny_onnx(tmp_path / "bare.onnx", None)
    with pytest.raises(DataError, match="no medge preprocessing metadata"):
        load_data_for_onnx(str(tmp_path / "imgs"), tmp_path / "bare.onnx")
    with pytest.raises(DataError, match="does not exist"):
        load_data_for_onnx(str(tmp_path / "imgs"), tmp_path / "missing.onnx")


def test_preprocessing_that_disagrees_with_the_model_input(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8), dtype=np.uint8))
    meta = image_meta(size=8)
    with pytest.raises(DataError, match="disagrees with its input"):
        load_data(str(tmp_path / "a.png"), meta, input_name="image", input_shape=(1, 1, 16, 16))


def test_non_finite_rows_are_skipped_with_a_reason(tmp_path):
    x = np.random.default_rng(5).random((4, 8, 8)).astype(np.float32)
    x[2, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", inputs=x)
    ds = _load(tmp_path / "nan.npz", image_meta(size=8))
    assert (ds.report.found, ds.report.used, ds.report.skipped) == (4, 3, 1)
    assert ds.report.skipped_items == [{"item": "nan.npz[2]", "reason": "input has NaN or infinite values after "
                                                                        "preprocessing"}]
