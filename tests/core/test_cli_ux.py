"""The CLI as a new user meets it: help, typos, JSON on every failure, up-front output checks,
warnings and step lines on stderr, short summary tables (issue 14)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from medge_cli import COMMANDS
from fixtures.cli_checks import assert_one_line_error


def _help(cli, *command: str) -> str:
    res = cli(*command, "--help")
    assert res.returncode == 0, res.stderr
    return " ".join(res.stdout.split())  # argparse wraps lines; compare words


def test_bare_medge_prints_help(run_cli):
    res = run_cli()
    assert res.returncode == 0 and "usage: medge" in res.stdout and "example:" in res.stdout
    assert all(name in res.stdout for name in COMMANDS)


def test_command_typo_gets_did_you_mean(cli_in_process, tmp_path):
    res = cli_in_process("compil", "--json")
    line = assert_one_line_error(res, "unknown command 'compil'", "did you mean 'compile'", code=2)
    assert json.loads(res.stdout) == {"ok": False, "error": line.removeprefix("medge: error: "), "exit_code": 2}


@pytest.mark.parametrize("argv, needle", [
    (("compile", "m.onnx", "-t", "intel-cpu"), "-o/--output"),  # missing option (argparse)
    (("quantize", "m.onnx", "-o", "q.onnx", "--precision", "int9"), "invalid choice"),
    (("compile", "m.onnx", "-t", "jetson-orin-nanno", "-o", "b"), "did you mean 'jetson-orin-nano'"),  # unknown target
])
def test_json_and_report_on_every_failure(cli_in_process, tmp_path, argv, needle):
    res = cli_in_process(*argv, "--json", report=True)
    assert res.returncode in (1, 2)
    line = assert_one_line_error(res, needle, code=res.returncode)
    printed = json.loads(res.stdout)
    assert printed["ok"] is False and printed["error"] == line.removeprefix("medge: error: ")
    assert res.report == printed


def test_failed_command_report_has_ok_false_and_error(run_cli, tmp_path):
    res = run_cli("inspect", tmp_path / "missing.onnx", report=True)
    assert_one_line_error(res, "file not found")
    assert res.report["ok"] is False and "file not found" in res.report["error"]


def test_every_command_help_has_an_example(cli_in_process):
    for name in COMMANDS:
        text = _help(cli_in_process, name)
        assert re.search(r"example: medge " + re.escape(name), text), name


def test_one_default_precision_rule_in_build_and_compile_help(cli_in_process):
    from medge.commands.common_args import PRECISION_HELP

    def squash(text: str) -> str:  # argparse wraps at spaces and hyphens
        return "".join(text.split())

    rule = squash(PRECISION_HELP)
    assert rule in squash(_help(cli_in_process, "build")) and rule in squash(_help(cli_in_process, "compile"))


def test_quantize_options_have_descriptions_and_defaults(cli_in_process):
    text = _help(cli_in_process, "quantize")
    for option, default in [("--precision", "default int8"), ("--backend", "default ort"), ("--calib-size", "default 300"),
                            ("--calib-method", "default minmax"), ("--eval-size", "default 300"),
                            ("--bootstrap", "default 1000"), ("--seed", "default 0")]:
        start = text.index(f"{option} ", text.index("options:"))
        assert default in text[start:start + 400], option


@pytest.mark.parametrize("command", ["quantize", "compile", "build"])
def test_negative_max_drop_is_rejected(cli_in_process, tmp_path, command):
    extra = {"quantize": ["-o", "q.onnx"], "compile": ["-t", "intel-cpu", "-o", "b"], "build": []}[command]
    res = cli_in_process(command, "m.onnx", *extra, "--max-drop", "-0.01")
    assert_one_line_error(res, "--max-drop", "0 or more", code=2)


def test_export_to_a_folder_fails_before_any_work(run_cli, tmp_path):
    res = run_cli("export", "cxr-densenet-tiny", "-o", tmp_path, report=True)
    assert_one_line_error(res, "is a folder", "model.onnx", code=2)
    assert "[1/4]" not in res.stderr  # refused before loading the model
    assert res.report["ok"] is False


def test_export_shows_steps_and_a_short_summary(run_cli, tmp_path):
    out = tmp_path / "cxr.onnx"
    res = run_cli("export", "cxr-densenet-tiny", "-o", out, report=True)
    assert res.returncode == 0, res.stderr
    steps = [ln for ln in res.stderr.splitlines() if re.match(r"medge: \[\d/4\] ", ln)]
    assert [s[7:12] for s in steps] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert "WARNING" not in res.stderr
    rep = res.report
    assert rep["ok"] is True and rep["weights"].startswith("demo weights") and rep["warnings"] == []
    rows = res.stdout.strip().splitlines()[2:]  # title and underline
    assert rows[0].startswith("result") and "PASS" in rows[0] and len(rows) <= 10


def test_zoo_model_without_weights_warns(run_cli, tmp_path):
    # a variant of a zoo architecture (--model-kwargs) has no demo weights, like cxr-densenet121
    res = run_cli("export", "cxr-densenet-tiny", "--model-kwargs", '{"init_features": 8}', "-o", tmp_path / "r.onnx",
                  report=True)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("medge: WARNING:")]
    assert len(warnings) == 1 and "no weights" in warnings[0] and "--weights" in warnings[0]
    assert res.report["weights"].startswith("random") and "no weights" in res.report["warnings"][0]


@pytest.mark.slow
def test_cxr_densenet121_without_weights_warns(run_cli, tmp_path):
    res = run_cli("export", "cxr-densenet121", "-o", tmp_path / "d121.onnx", report=True)
    assert res.returncode == 0, res.stderr
    assert any(ln.startswith("medge: WARNING:") and "no weights" in ln for ln in res.stderr.splitlines())
    assert res.report["warnings"] and res.report["weights"].startswith("random")


def test_start_up_and_zoo_models_do_not_import_all_of_monai():
    code = (
        "import sys, medge_cli; medge_cli.build_parser(); "
        "heavy = [m for m in ('torch', 'monai', 'onnx', 'openvino', 'scipy.stats') if m in sys.modules]; assert not heavy, heavy; "
        "from medge.zoo import build_model; build_model('cxr-densenet-tiny'); build_model('us-lesion-unet'); "
        "heavy = [m for m in ('transformers', 'pandas', 'matplotlib', 'monai.transforms', 'monai.apps.datasets') "
        "if m in sys.modules]; assert not heavy, heavy; "
        "import monai.networks.nets as nets; from medge.zoo.cnn import tiny_densenet; "
        "assert type(tiny_densenet().net) is nets.DenseNet  # a later full import sees the same classes"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
