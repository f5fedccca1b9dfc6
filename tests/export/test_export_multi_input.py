"""Models with several inputs: the promptable segmenter (image + click), exported as one graph and
as encoder + decoder, then quantized, compiled, profiled and compared through the real CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from calibration.calib_fixtures import write_png
from fixtures.cli_checks import assert_one_line_error
from medge.common.metadata import read_metadata

SAM = "us-lesion-sam"


def _click_npz(path: Path, n: int, seed: int) -> Path:
    """Model-ready lesion frames, one click inside each lesion, and the masks, as one .npz."""
    from medge.calibration.synthetic import generate
    from medge.zoo import get_card
    from medge.zoo.promptable import lesion_clicks

    pre = get_card(SAM).preprocessing
    raw, masks = generate("us-seg", 3 * n, seed=seed, size=pre["height"])
    keep = masks.reshape(len(masks), -1).any(1)
    raw, masks = raw[keep][:n], masks[keep][:n]
    image = ((raw[:, None] - pre["mean"][0]) / pre["std"][0]).astype(np.float32)
    np.savez(path, image=image, point=lesion_clicks(masks, np.random.default_rng(seed)), masks=masks[:, None])
    return path


def test_promptable_segmenter_one_graph_through_every_command(run_cli, tmp_path):
    onnx_path = tmp_path / "sam.onnx"
    exp = run_cli("export", SAM, "-o", onnx_path, "--dynamic-batch", report=True)
    assert exp.returncode == 0, exp.stderr[-2000:]
    assert [i["name"] for i in exp.report["inputs"]] == ["image", "point"]
    parity = exp.report["parity"]
    assert parity["passed"] and parity["batch_sizes"] == [1, 2]
    assert read_metadata(onnx_path).extra["inputs"][1] == {"name": "point", "shape": [1, 1, 2], "dtype": "float32",
                                                          "default": [[0.5, 0.5]]}
    calib, evaluation = _click_npz(tmp_path / "calib.npz", 16, 1), _click_npz(tmp_path / "eval.npz", 16, 2)

    q = run_cli("quantize", onnx_path, "-o", tmp_path / "q.onnx", "--calib", calib, "--eval", evaluation,
                "--max-drop", "1.0", "--bootstrap", "50", report=True)
    assert q.returncode == 0, q.stderr[-2000:]
    assert q.report["metric"]["name"] == "dice" and q.report["metric"]["n_eval"] == 16

    pngs = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for i in range(4):
        write_png(pngs / f"f{i}.png", (rng.random((80, 96)) * 255).astype(np.uint8))
    q2 = run_cli("quantize", onnx_path, "-o", tmp_path / "q2.onnx", "--calib", pngs, report=True)
    assert q2.returncode == 0, q2.stderr[-2000:]
    assert "input 'point' fed its declared default" in q2.report["calibration"]["notes"]

    bundle = tmp_path / "bundle"
    # a loose metric gate on the two-input eval set (without one, parity refuses this demo's ungated INT8)
    comp = run_cli("compile", onnx_path, "--target", "intel-cpu", "--precision", "int8", "--calib", calib,
                   "--eval", evaluation, "--max-drop", "1.0", "--option", "calib_samples=16",
                   "--option", "eval_samples=16", "-o", bundle, report=True)
    assert comp.returncode == 0, comp.stderr[-2000:]
    assert comp.report["gate"]["name"] == "dice" and comp.report["gate"]["passed"] is True
    prof = run_cli("profile", bundle, "--inputs", evaluation, "--runs", "3", "--warmup", "1", "--layers", "0",
                   "--in-process", report=True)
    assert prof.returncode == 0, prof.stderr[-2000:]
    # its quality is the gate's business, so the limits here only ask that both inputs reach it
    cmp = run_cli("compare", onnx_path, bundle, "--inputs", evaluation, "--n", "8", "--max-abs-error", "1",
                  "--min-cosine", "0", report=True)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert cmp.report["n_inputs"] == 8 and cmp.report["artifacts"][0]["cosine"] > 0


def test_named_input_shapes_for_a_factory_and_their_errors(run_cli, tmp_path):
    out = tmp_path / "f.onnx"
    ref = "medge.zoo.promptable:promptable_segmenter"
    res = run_cli("export", ref, "--model-kwargs", '{"size": 32}', "--input-shape", "image=1x1x32x32",
                  "--input-shape", "point=1x1x2:float32", "--input-default", "point=[[0.25, 0.75]]", "-o", out,
                  report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [i["name"] for i in res.report["inputs"]] == ["image", "point"] and res.report["parity"]["passed"]
    meta = read_metadata(out)
    assert meta.extra["inputs"][1]["default"] == [[0.25, 0.75]] and meta.preprocessing["height"] == 32
    bad = run_cli("export", ref, "--input-shape", "1x1x32x32", "--input-shape", "point=1x1x2", "-o", out)
    assert_one_line_error(bad, "several inputs need names", code=2)
    bad = run_cli("export", ref, "--input-shape", "image=1x1x32x32", "--input-shape", "point=1x1x2:complex", "-o", out)
    assert_one_line_error(bad, "unknown dtype 'complex'", code=2)
    bad = run_cli("export", ref, "--input-shape", "image=1x1x32x32", "--input-shape", "point=1x1x2",
                  "--input-default", "point=[1, 2, 3]", "-o", out)
    assert_one_line_error(bad, "does not fit input 'point'", code=2)
    samples = tmp_path / "s.npz"
    np.savez(samples, image=np.zeros((2, 1, 32, 32), np.float32))
    bad = run_cli("export", ref, "--model-kwargs", '{"size": 32}', "--input-shape", "image=1x1x32x32",
                  "--input-shape", "point=1x1x2", "--samples", samples, "-o", out)
    assert_one_line_error(bad, "lack array(s) point")


@pytest.mark.slow
def test_encoder_plus_decoder_equal_the_one_graph(run_cli, tmp_path):
    paths = {}
    for name in (SAM, f"{SAM}-encoder", f"{SAM}-decoder"):
        paths[name] = tmp_path / f"{name}.onnx"
        res = run_cli("export", name, "-o", paths[name], report=True)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.report["parity"]["passed"]
    data = np.load(_click_npz(tmp_path / "d.npz", 4, 3))
    whole = ort.InferenceSession(str(paths[SAM])).run(None, {"image": data["image"][:1], "point": data["point"][:1]})[0]
    embedding = ort.InferenceSession(str(paths[f"{SAM}-encoder"])).run(None, {"image": data["image"][:1]})[0]
    decoder = ort.InferenceSession(str(paths[f"{SAM}-decoder"]))
    for i in range(4):  # encode once, decode per click
        mask = decoder.run(None, {"embedding": embedding, "point": data["point"][i:i + 1]})[0]
        if i == 0:
            np.testing.assert_allclose(mask, whole, atol=1e-5)
        assert mask.shape == (1, 1, 64, 64)
    calib = tmp_path / "dec.npz"
    np.savez(calib, embedding=np.repeat(embedding, 4, 0), point=data["point"])
    q = run_cli("quantize", paths[f"{SAM}-decoder"], "-o", tmp_path / "dq.onnx", "--calib", calib, report=True)
    assert q.returncode == 0, q.stderr[-2000:]
    assert q.report["calibration"]["samples"] == 4
