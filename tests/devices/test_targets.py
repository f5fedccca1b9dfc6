"""Device profiles: every target listed and shown through the CLI, and requests validated first."""

from __future__ import annotations

import json

import pytest

from medge.devices import TARGETS, get_target, load_profiles
from medge.devices.target import PROFILES_FILE, validate_request
from medge.common.errors import TargetError, UnknownNameError

# One row per target: (family, recipe, runtime, precisions).  Adding a profile without adding it
# here fails test_every_target_has_a_test.
EXPECTED = {
    "jetson-orin-nano": ("jetson", "tensorrt", "tensorrt", ("fp32", "fp16", "int8")),
    "jetson-orin-nx": ("jetson", "tensorrt", "tensorrt", ("fp32", "fp16", "int8")),
    "jetson-agx-orin": ("jetson", "tensorrt", "tensorrt", ("fp32", "fp16", "int8")),
    "jetson-agx-orin-dla": ("jetson", "tensorrt", "tensorrt", ("fp16", "int8")),
    "jetson-xavier-nx": ("jetson", "tensorrt", "tensorrt", ("fp32", "fp16", "int8")),
    "jetson-nano": ("jetson", "tensorrt", "tensorrt", ("fp32", "fp16")),
    "intel-cpu": ("intel", "openvino", "openvino", ("fp32", "fp16", "int8")),
    "intel-igpu": ("intel", "openvino", "openvino", ("fp32", "fp16", "int8")),
    "intel-npu": ("intel", "openvino", "openvino", ("fp16", "int8")),
    "android-qualcomm-npu": ("android", "litert", "litert", ("fp16", "int8")),
    "android-mediatek-npu": ("android", "litert", "litert", ("fp16", "int8")),
    "android-gpu": ("android", "litert", "litert", ("fp32", "fp16")),
    "raspberry-pi-5": ("raspberrypi", "arm", "onnxruntime", ("fp32", "int8")),
    "local": ("host", "onnxruntime", "onnxruntime", ("fp32", "int8")),
}


def test_every_target_has_a_test():
    assert set(TARGETS.names()) == set(EXPECTED), "add new targets to EXPECTED (and give them a compile test)"


def test_devices_list_lists_every_target(run_cli):
    res = run_cli("devices", "list", report=True)
    assert res.returncode == 0, res.stderr
    assert [item["name"] for item in res.report["items"]] == TARGETS.names()
    jetson_nano = next(i for i in res.report["items"] if i["name"] == "jetson-nano")
    assert jetson_nano["int8_accelerated"] is False and "int8" not in jetson_nano["precisions"]


@pytest.mark.parametrize("name", TARGETS.names())
def test_devices_show_each_target(run_cli, name):
    res = run_cli("devices", "show", name, report=True)
    assert res.returncode == 0, res.stderr
    data = res.report
    family, recipe, runtime, precisions = EXPECTED[name]
    assert data["name"] == name
    assert (data["family"], data["recipe"], data["runtime"]) == (family, recipe, runtime)
    assert tuple(data["precisions"]) == precisions
    assert data["default_precision"] in data["precisions"]
    assert data["toolkit"]["name"] and data["toolkit"]["version"]
    assert isinstance(data["compile_options"], dict) and data["compile_options"]
    if family == "jetson":
        assert data["compute_capability"] and data["supported_ops"].startswith("tensorrt-")
        assert data["compile_options"]["workspace_mb"] > 0


def test_toolkit_versions_match_jetpack():
    assert get_target("jetson-orin-nano").toolkit.version.startswith("10.")
    assert get_target("jetson-xavier-nx").toolkit.version == "8.5"
    dla = get_target("jetson-agx-orin-dla")
    assert dla.uses_dla and dla.compile_options["dla_core"] == 0 and dla.dla_cores == 2


def test_unknown_target_suggests(run_cli):
    res = run_cli("devices", "show", "jetson-orin-nan")
    assert res.returncode == 1
    assert "did you mean 'jetson-orin-nano'" in res.stderr and "Traceback" not in res.stderr


def test_precision_validation():
    assert validate_request(get_target("jetson-nano"), None) == "fp16"
    with pytest.raises(TargetError, match="supported precisions: fp32, fp16"):
        validate_request(get_target("jetson-nano"), "int8")
    with pytest.raises(TargetError, match="does not support fp32"):
        validate_request(get_target("jetson-agx-orin-dla"), "fp32")
    with pytest.raises(UnknownNameError, match="did you mean 'fp16'"):
        validate_request(get_target("jetson-agx-orin"), "fp61")


def test_bad_profile_file_is_rejected(tmp_path):
    raw = json.loads(PROFILES_FILE.read_text())
    entry = dict(raw["profiles"][0], default_precision="int4")
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"profiles": [entry]}))
    with pytest.raises(ValueError, match="default_precision"):
        load_profiles(path)
    path.write_text(json.dumps({"profiles": [raw["profiles"][0], raw["profiles"][0]]}))
    with pytest.raises(ValueError, match="duplicate"):
        load_profiles(path)


# (other precisions, int8): the channel blocks of each target's kernels, which pruned widths are rounded to.
CHANNEL_MULTIPLES = {
    "jetson-orin-nano": (8, 32), "jetson-orin-nx": (8, 32), "jetson-agx-orin": (8, 32),
    "jetson-agx-orin-dla": (32, 32), "jetson-xavier-nx": (8, 32), "jetson-nano": (8, 8), "intel-cpu": (16, 16), "intel-igpu": (16, 16),
    "intel-npu": (32, 32), "android-qualcomm-npu": (32, 32), "android-mediatek-npu": (32, 32),
    "android-gpu": (4, 4), "raspberry-pi-5": (8, 8), "local": (8, 8),
}


@pytest.mark.parametrize("name", TARGETS.names())
def test_channel_multiple_per_target_and_precision(name):
    target = get_target(name)
    for precision in target.precisions:
        assert target.channel_multiple_for(precision) == CHANNEL_MULTIPLES[name][precision == "int8"], precision


def test_devices_show_prints_the_channel_multiple(run_cli):
    res = run_cli("devices", "show", "jetson-orin-nano", report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["channel_multiple"] == 8 and res.report["channel_multiple_by_precision"] == {"int8": 32}
    text = run_cli("devices", "show", "intel-cpu")
    assert "channel_multiple" in text.stdout and "16" in text.stdout


def test_channel_multiple_defaults_and_is_validated(tmp_path):
    raw = json.loads(PROFILES_FILE.read_text())
    entry = {k: v for k, v in raw["profiles"][0].items() if not k.startswith("channel_multiple")}
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"profiles": [entry]}))
    assert next(iter(load_profiles(path).values())).channel_multiple_for("int8") == 8
    for bad, match in (({"channel_multiple": 0}, "channel_multiple must be a positive integer"),
                       ({"channel_multiple": "16"}, "channel_multiple must be a positive integer"),
                       ({"channel_multiple_by_precision": {"int4": 32}}, "not in precisions")):
        path.write_text(json.dumps({"profiles": [dict(entry, **bad)]}))
        with pytest.raises(ValueError, match=match):
            load_profiles(path)
