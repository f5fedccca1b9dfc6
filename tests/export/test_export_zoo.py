"""Every zoo model exports through the real CLI with parity at batch 1 and 2 and its metadata."""

from __future__ import annotations

import pytest

from medge.metadata import read_metadata
from medge.fileio import sha256_file
from medge.zoo import MODELS, get_card

# > 20 s each on this shared machine; the two small models keep the default run quick.
SLOW = {"cxr-densenet121", "cxr-densenet-tiny", "cxr-hybrid-vit", "us-lesion-unet"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODELS.names()]
)
def test_zoo_model_exports_with_parity(run_cli, tmp_path, name):
    card = get_card(name)
    out = tmp_path / f"{name}.onnx"
    res = run_cli("export", name, "-o", out, "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = res.report
    parity = rep["parity"]
    assert parity["passed"] and parity["batch_sizes"] == [1, 2]
    assert parity["max_abs_error"] <= 1e-4
    assert [o["name"] for o in parity["outputs"]] == list(card.output_names)
    assert rep["inputs"] == [{"name": card.input_name, "shape": ["batch", *card.input_shape[1:]], "dtype": "float32"}]
    assert [o["name"] for o in rep["outputs"]] == list(card.output_names)
    assert [o["shape"] for o in rep["outputs"]] == [["batch", *card.output_shape[1:]]]
    # one self-contained file: no external-data side files next to it
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("report-")) == [out.name]
    assert rep["size_bytes"] == out.stat().st_size and rep["sha256"] == sha256_file(out)
    assert rep["params"] > 0 and rep["macs"] > 0
    # the ONNX-graph MAC counter agrees with the PyTorch-side counter of the zoo
    assert rep["onnx_macs"] == pytest.approx(rep["macs"], rel=0.02)
    if card.params is not None:
        assert rep["params"] == card.params
    meta = read_metadata(out)
    assert meta is not None
    assert (meta.model, meta.task, meta.labels) == (name, card.task, list(card.labels))
    assert meta.input_layout == card.input_layout and meta.preprocessing == card.preprocessing
    assert meta.output_names == list(card.output_names) and meta.source_sha256 == rep["source_sha256"]
