"""The main job on the phone NPU for every zoo model with weights (its own or shared):
`medge build MODEL --target android-qualcomm-npu` passes its gate with a full-integer .tflite,
and a delegate coverage below 0.90 comes with the ops that block it and why.

About ten minutes for the whole zoo on 2 cores, so it is not in the default suite: CI runs it as
its own step (`python -m pytest -m zoo_npu`, see .ci/run)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.zoo_npu]


def _weighted_zoo() -> list[str]:
    from medge.zoo import MODELS, get_card, weights_path

    names = []
    for name in sorted(MODELS):
        card = get_card(name)
        path = weights_path(card.weights_from) if card.weights_from else weights_path(name)
        if path is not None and path.is_file():
            names.append(name)
    return names


@pytest.mark.parametrize("model", _weighted_zoo())
def test_zoo_model_builds_for_the_qualcomm_npu_and_passes_its_gate(run_cli, tmp_path, model):
    out = tmp_path / "qnn"
    res = run_cli("build", model, "--target", "android-qualcomm-npu", "--runs", "4", "--warmup", "1", "-o", out,
                  report=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-2000:]
    comp = res.report["compile"]
    assert comp["gate"]["passed"] is True, comp["gate"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["litert"]["full_integer"] is True
    pre = manifest["preflight"]
    if pre["coverage"] < 0.9:  # the report names what keeps the rest off the NPU
        assert pre["coverage_blockers"] and all(b["ops"] and b["why"] for b in pre["coverage_blockers"])
        assert any("what blocks it" in n for n in comp["notes"])
