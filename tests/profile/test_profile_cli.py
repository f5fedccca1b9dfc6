"""`medge profile` end to end through the CLI: local (every runtime, bundles) and over real SSH."""

from __future__ import annotations

import os
import shutil

import pytest

FAST = ["--warmup", "2", "--runs", "20"]


def _check_common(report: dict, artifact_size: int) -> None:
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["std"] >= 0 and lat["min"] <= lat["mean"] <= lat["max"]
    lo, hi = report["median_ci95"]
    assert lo <= lat["p50"] <= hi
    assert report["throughput_per_s"] == pytest.approx(1000.0 / lat["mean"])
    assert report["load_ms"] > 0 and report["first_inference_ms"] > 0
    assert report["peak_rss_mb"] > report["rss_before_load_mb"] > 0
    assert report["peak_rss_delta_mb"] == pytest.approx(report["peak_rss_mb"] - report["rss_before_load_mb"])
    assert report["size_bytes"] == artifact_size
    assert report["runs"] == 20 and report["warmup"] == 2
    assert report["host"]["cores"] == os.cpu_count() and report["host"]["cpu"]


def test_profile_onnxruntime(run_cli, tiny):
    res = run_cli("profile", tiny.onnx, *FAST, "--threads", "1", "--layers", "3", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    _check_common(r, tiny.onnx.stat().st_size)
    assert r["runtime"] == "onnxruntime" and r["device"] == "cpu" and r["threads"] == 1
    assert r["inputs_source"] == "random-normal(seed=0)" and r["input_shapes"] == {"image": [1, 1, 16, 16]}
    assert 0 < len(r["layers"]) <= 3 and any(row["op"] == "Conv" for row in r["layers"])
    assert r["remote"] is None


def test_profile_openvino_ir_counts_bin_and_layers(run_cli, tiny):
    res = run_cli("profile", tiny.ir, *FAST, report=True)
    assert res.returncode == 0, res.stderr
    size = tiny.ir.stat().st_size + tiny.ir.with_suffix(".bin").stat().st_size
    _check_common(res.report, size)
    assert res.report["runtime"] == "openvino"
    assert any(row["op"] == "Convolution" for row in res.report["layers"])


def test_profile_litert_reports_xnnpack_and_no_layers(run_cli, tiny):
    res = run_cli("profile", tiny.tflite_nhwc, *FAST, "--threads", "2", "--layers", "0", report=True)
    assert res.returncode == 0, res.stderr
    _check_common(res.report, tiny.tflite_nhwc.stat().st_size)
    assert res.report["runtime_info"]["xnnpack"] is True and res.report["layers"] == []
    assert res.report["input_shapes"] == {"serving_default_args_0": [1, 16, 16, 1]}


def test_profile_with_inputs_from_npz(run_cli, tiny, tmp_path):
    import numpy as np

    data = tmp_path / "frames.npz"  # model-ready for the NHWC tflite: (n, H, W, C)
    np.savez(data, x=np.random.default_rng(0).random((5, 16, 16, 1), dtype=np.float32), preprocessed=True)
    res = run_cli("profile", tiny.tflite_nhwc, *FAST, "--inputs", data, "--layers", "0", report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["inputs_source"] == str(data) and res.report["input_shapes"] == {"serving_default_args_0": [1, 16, 16, 1]}
    bad = run_cli("profile", tiny.onnx, "--inputs", tmp_path / "missing.npz")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and bad.stderr.startswith("medge: error:")


@pytest.mark.slow
def test_profile_onnx_with_openvino_runtime_in_process(run_cli, tiny):
    res = run_cli("profile", tiny.onnx, *FAST, "--runtime", "openvino", "--layers", "0", "--in-process", report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["runtime"] == "openvino" and res.report["layers"] == []


def make_bundle(folder, tiny):
    """A minimal medge bundle holding the IR, with a manifest written by medge.common.bundle."""
    from medge.common.bundle import write_manifest

    folder.mkdir()
    shutil.copy(tiny.ir, folder / "model.xml")
    shutil.copy(tiny.ir.with_suffix(".bin"), folder / "model.bin")
    write_manifest(folder, {"target": "test-cpu", "primary_artifact": "model.xml", "runtime": "openvino", "runtime_device": "CPU"})
    return folder


def test_profile_bundle_uses_manifest(run_cli, tiny, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", tiny)
    res = run_cli("profile", bundle, *FAST, "--layers", "0", report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["runtime"] == "openvino" and res.report["device"] == "CPU"
    assert res.report["artifact"] == str(bundle)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--runs", "1"], 1, "--runs must be at least 2"),
        (["--threads", "0"], 1, "--threads must be at least 1"),
        (["--device", "ftp://x"], 2, "bad device 'ftp://x'"),
        (["--runtime", "openvin"], 1, "did you mean 'openvino'"),
    ],
)
def test_profile_bad_options(run_cli, tiny, args, code, message):
    res = run_cli("profile", tiny.onnx, *args)
    assert res.returncode == code and message in res.stderr and "Traceback" not in res.stderr


def test_profile_missing_artifact(run_cli, tmp_path):
    res = run_cli("profile", tmp_path / "missing.onnx")
    assert res.returncode == 1 and "artifact not found" in res.stderr


# --- over SSH, against a real sshd on loopback -------------------------------------------------
def test_remote_profile_artifact(run_cli, tiny, sshd):
    res = run_cli("profile", tiny.onnx, *FAST, "--layers", "2", *sshd.cli_args(), report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["remote"] == sshd.url and r["runtime"] == "onnxruntime"
    _check_common(r, tiny.onnx.stat().st_size)
    assert r["artifact"] == str(tiny.onnx) and len(r["layers"]) == 2


@pytest.mark.slow
def test_remote_profile_bundle_with_remote_python(run_cli, tiny, sshd, tmp_path):
    import sys

    import numpy as np

    bundle = make_bundle(tmp_path / "remote-bundle", tiny)
    data = tmp_path / "frames.npz"  # a local data source travels to the device with the bundle
    np.savez(data, x=np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32), preprocessed=True)
    args = [a for a in sshd.cli_args() if a not in ("--remote-medge", sshd.medge)]
    res = run_cli("profile", bundle, *FAST, "--layers", "0", "--inputs", data, *args, "--remote-python", sys.executable,
                  report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["remote"] == sshd.url and res.report["runtime"] == "openvino" and res.report["device"] == "CPU"
    assert res.report["artifact"] == str(bundle) and res.report["inputs_source"].endswith("/frames.npz")


def test_remote_unreachable_host(run_cli, tiny, sshd, unused_port):
    url = sshd.url.rsplit(":", 1)[0] + f":{unused_port}"
    args = sshd.cli_args()
    args[args.index(sshd.url)] = url
    res = run_cli("profile", tiny.onnx, *args)
    assert res.returncode == 1 and f"cannot reach {url}" in res.stderr and "Traceback" not in res.stderr


def test_remote_auth_failure(run_cli, tiny, sshd, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    args = sshd.cli_args()
    args[args.index(str(sshd.key))] = str(tmp_path / "stranger")
    res = run_cli("profile", tiny.onnx, *args)
    assert res.returncode == 1 and "SSH authentication to" in res.stderr and "failed" in res.stderr


def test_remote_bad_ssh_option_is_a_usage_error(run_cli, tiny, sshd):
    res = run_cli("profile", tiny.onnx, *sshd.cli_args(), "--ssh-option", "Compression")
    assert res.returncode == 2 and "bad --ssh-option 'Compression'" in res.stderr


def test_remote_medge_not_installed(run_cli, tiny, sshd):
    args = sshd.cli_args()
    args[args.index(sshd.medge)] = "/nonexistent/bin/medge"
    res = run_cli("profile", tiny.onnx, *args)
    assert res.returncode == 1 and "medge is not installed on" in res.stderr


@pytest.mark.slow
def test_remote_error_is_relayed(run_cli, tiny, sshd):
    res = run_cli("profile", tiny.onnx, "--runtime", "litert", *FAST, *sshd.cli_args())
    assert res.returncode == 1 and f"medge profile failed on {sshd.url}" in res.stderr
