"""ecg-mamba-3to12-step: the Mamba blocks as a recurrent step with their state as inputs and outputs.

Stepping the exported ONNX step (ONNX Runtime) token by token over a 2 s record, feeding each
step's state back in, gives the block outputs of the full model's chunked closed-form scan.
"""

from __future__ import annotations

import numpy as np
import pytest

from medge.zoo import build_model, get_card

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def _tokens(full, samples: int = 1000):
    signal = torch.from_numpy(np.random.default_rng(0).normal(0, 0.5, (2, 3, samples)).astype(np.float32))
    with torch.no_grad():
        tokens = full.stem(signal).transpose(1, 2)  # (2, samples / 4, 32): 250 cross a scan chunk boundary (125)
        return tokens, full.blocks(tokens).numpy()


def test_stepping_the_recurrence_in_pytorch_matches_the_chunked_scan():
    from medge.zoo.mamba_ecg import mamba_ecg_step

    full, step = build_model("ecg-mamba-3to12"), mamba_ecg_step()
    tokens, expected = _tokens(full)
    conv, ssm = torch.zeros(2, 2, 64, 3), torch.zeros(2, 2, 64, 8)
    outs = []
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            y, conv, ssm = step(tokens[:, t:t + 1], conv, ssm)
            outs.append(y)
    np.testing.assert_allclose(torch.cat(outs, 1).numpy(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_stepping_the_exported_recurrence_matches_the_chunked_full_sequence_model(run_cli, tmp_path):
    card = get_card("ecg-mamba-3to12-step")
    out = tmp_path / "step.onnx"
    res = run_cli("export", card.name, "-o", out, "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [i["name"] for i in res.report["inputs"]] == ["token", "conv_state", "ssm_state"]
    assert [o["name"] for o in res.report["outputs"]] == ["token_out", "conv_state_out", "ssm_state_out"]
    assert "demo weights of ecg-mamba-3to12" in res.report["weights"]
    assert not res.report.get("warnings")

    full = build_model("ecg-mamba-3to12")  # the shipped weights the step shares
    tokens, expected = _tokens(full)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    shapes = {i["name"]: i["shape"] for i in card.extra_inputs}
    conv = np.zeros([2, *shapes["conv_state"][1:]], np.float32)
    ssm = np.zeros([2, *shapes["ssm_state"][1:]], np.float32)
    steps = []
    x = tokens.numpy()
    for t in range(x.shape[1]):
        y, conv, ssm = sess.run(None, {"token": x[:, t:t + 1], "conv_state": conv, "ssm_state": ssm})
        steps.append(y)
    got = np.concatenate(steps, axis=1)
    assert np.abs(expected).max() > 0.1  # a live signal, not zeros
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # the state carries the past: restarting from zeros mid-record gives different outputs
    y_fresh = sess.run(None, {"token": x[:, 200:201], "conv_state": np.zeros_like(conv),
                              "ssm_state": np.zeros_like(ssm)})[0]
    assert np.abs(y_fresh - expected[:, 200:201]).max() > 1e-3
