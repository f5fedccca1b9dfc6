"""`medge doctor` here and over SSH, and zoo names on a machine without torch."""

from __future__ import annotations

import json
import os
import subprocess

from deploy_checks import ssh_args
from fixtures.cli_checks import assert_one_line_error, medge_command

# Makes torch and the toolchain unimportable in a child process, as on a device that never installed them.
NO_TORCH = '''import importlib.util, sys
BLOCK = {"torch", "onnxscript", "safetensors", "monai", "einops", "onnxslim"}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
sys.meta_path.insert(0, Blocker())
_find = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if name.split(".")[0] in BLOCK else _find(name, package)
'''


def _medge(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(medge_command() + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or dict(os.environ))


def test_doctor_here_prints_and_writes_json(tmp_path):
    proc = _medge("doctor", "--report", str(tmp_path / "doctor.json"))
    assert proc.returncode == 0, proc.stderr
    for row in ("runtime onnxruntime", "opencv", "serial ports", "disk free", "app ultrasound", "target local"):
        assert row in proc.stdout
    data = json.loads((tmp_path / "doctor.json").read_text())
    assert data["runtimes"]["onnxruntime"]["installed"] and "CPUExecutionProvider" in data["runtimes"]["onnxruntime"]["providers"]
    assert data["cpu"]["usable_cores"] >= 1 and data["hardware"]["disk_free_bytes"] > 0
    assert data["targets"]["local"]["ready"] and set(data["apps"]) == {"ultrasound", "ecg", "xray"}
    assert not data["targets"]["android-qualcomm-npu"]["ready"]


def test_doctor_over_ssh(sshd):
    proc = _medge("doctor", *ssh_args(sshd), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["remote"] == sshd.url and data["runtimes"]["onnxruntime"]["installed"]
    assert "targets" in data and "apps" in data


def test_doctor_remote_without_medge_is_one_line(sshd):
    args = ssh_args(sshd)
    args[args.index("--remote-medge") + 1] = "/nonexistent/medge"
    assert_one_line_error(_medge("doctor", *args), "medge is not installed on", "pip install 'medge[device]'")


def test_zoo_name_without_torch(tmp_path):
    """No torch: an empty cache gives one line naming the workstation export; a cached ONNX is used."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_TORCH)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ["ultrasound", "--segmenter", "us-lesion-unet", "--source", "synthetic:10:96x96", "--view", "none", "--frames", "3"]
    assert_one_line_error(_medge(*args, env=env), "--segmenter us-lesion-unet is a zoo model", "needs torch",
                          "medge export us-lesion-unet -o us-lesion-unet.onnx", "pip install 'medge[toolchain]'")
    assert_one_line_error(_medge("ecg", "stream", "--model", "ecg-3to12", "--port", str(tmp_path / "none"), env=env),
                          "--model ecg-3to12 is a zoo model", "medge export ecg-3to12")
    cached = tmp_path / "cache" / "medge" / "apps" / "us-lesion-unet.onnx"
    cached.parent.mkdir(parents=True)
    export = _medge("export", "us-lesion-unet", "--input-shape", "1x1x64x64", "-o", str(cached))
    assert export.returncode == 0, export.stderr
    proc = _medge(*args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["models"]["segmenter"]["artifact"].endswith("us-lesion-unet.onnx")
