"""Every command that takes a model file rejects a damaged one with one error line and leaves nothing
behind (issue 20): truncated, bit-flipped, empty, text, and a valid protobuf whose graph uses a
tensor nothing produces.  All go through the one loader, `medge.runtimes.model_file.open_model`."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixtures.cli_checks import run_medge

BAD_FILES = ("truncated", "bitflip", "empty", "text", "dangling")
# command → argv (MODEL: the bad model or a bundle holding it; OUT: the output path, absent afterwards)
COMMANDS = {
    "inspect": ["inspect", "MODEL"],
    "quantize": ["quantize", "MODEL", "-o", "OUT.onnx", "--calib", "synthetic:cxr"],
    "compile": ["compile", "MODEL", "--target", "local", "-o", "OUT"],
    "compare": ["compare", "GOOD", "MODEL"],
    "profile": ["profile", "MODEL", "--runs", "2", "--warmup", "0"],
    "verify": ["verify", "MODEL"],
    "build": ["build", "MODEL", "--target", "local", "-o", "OUT"],
}
# What the one error line says about each file (the loader's own words).
NEEDLES = {
    "truncated": "protobuf does not decode",
    "bitflip": "protobuf does not decode",
    "empty": "the file is empty",
    "text": "it is a text file",
    "dangling": "'ghost'",
}
PT2_NEEDLES = {"truncated": "not a readable zip", "bitflip": "fails its CRC check", "empty": "the file is empty",
               "text": "not a readable zip"}
PROGRESS = ("medge: [", "medge: build:")  # step lines of compile and build, printed before the check


def _tiny_onnx(dangling: bool = False) -> bytes:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 16, 16])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 2, 16, 16])
    last = helper.make_node("Add", ["c", "ghost"], ["probs"]) if dangling else helper.make_node("Sigmoid", ["c"], ["probs"])
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]), last], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _damaged(good: bytes, kind: str, dangling: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "bitflip":  # a structural byte (ONNX: the ir_version tag; zip: inside a member), all bits flipped
        flipped = bytearray(good)
        flipped[0 if good[:1] == b"\x08" else len(good) // 2] ^= 0xFF
        return bytes(flipped)
    if kind == "empty":
        return b""
    if kind == "text":
        return b"this is not a model\n"
    return dangling


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Folder with good.onnx, <bad>.onnx, <bad>.pt2 (from a real ExportedProgram) and bundle-<bad>/."""
    import torch

    from medge.common.bundle import write_manifest

    root = tmp_path_factory.mktemp("bad_models")
    good, dangling = _tiny_onnx(), _tiny_onnx(dangling=True)
    (root / "good.onnx").write_bytes(good)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Sigmoid()).eval()
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 16, 16),)), str(root / "good.pt2"))
    pt2 = (root / "good.pt2").read_bytes()
    for kind in BAD_FILES:
        (root / f"{kind}.onnx").write_bytes(_damaged(good, kind, dangling))
        if kind != "dangling":  # a .pt2 has no graph to leave dangling; build gets the .onnx for that one
            (root / f"{kind}.pt2").write_bytes(_damaged(pt2, kind, dangling))
        bundle = root / f"bundle-{kind}"  # a manifest whose sha256 matches the damaged model
        bundle.mkdir()
        (bundle / "model.onnx").write_bytes(_damaged(good, kind, dangling))
        write_manifest(bundle, {"target": {"name": "local"}, "precision": "fp32", "primary_artifact": "model.onnx",
                                "runtime": "onnxruntime"})
    return root


def _argv(command: str, kind: str, root, work) -> list[str]:
    model = {"verify": root / f"bundle-{kind}",
             "build": root / (f"{kind}.onnx" if kind == "dangling" else f"{kind}.pt2")}.get(command, root / f"{kind}.onnx")
    swap = {"MODEL": str(model), "GOOD": str(root / "good.onnx"), "OUT": str(work / "out"), "OUT.onnx": str(work / "out.onnx")}
    return [swap.get(arg, arg) for arg in COMMANDS[command]]


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_model_file_is_one_line_error_and_leaves_nothing(models, tmp_path, command, kind):
    work, tmp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONHASHSEED="0")
    proc = run_medge(_argv(command, kind, models, work), cwd=work, env=env, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(PROGRESS)]
    assert len(lines) == 1 and lines[0].startswith("medge: error: "), proc.stderr[-2000:]
    pt2 = command == "build" and kind != "dangling"
    needle = PT2_NEEDLES[kind] if pt2 else NEEDLES[kind]
    assert needle in lines[0] and ("model.onnx" if command == "verify" else f"{kind}.") in lines[0], lines[0]
    assert sorted(p.name for p in work.iterdir()) == [], "output left behind"
    assert list(tmp.iterdir()) == [], "temporary files left behind"
