"""Issue 28: ``medge build MODEL --target intel-cpu --prune auto`` with no other flag passes its gate.

Slow: the default search distils 600 steps per probe on 2000+ gate samples (about 20 minutes per
model on a quiet 2-core machine).  The default suite keeps the small cases in test_prune_distill.py.
"""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the CLI call's own limit; conftest gives other slow tests 900 s
@pytest.mark.parametrize("model", ["cxr-densenet-tiny", "us-frame-screen"])
def test_readme_prune_auto_command_with_defaults_gives_a_gated_pruned_bundle(run_cli, tmp_path, model):
    bundle = tmp_path / "b"
    res = run_cli("build", model, "--target", "intel-cpu", "--prune", "auto", "-o", bundle, report=True,
                  timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.report["precision"] == "int8"  # --prune without --precision: the pruned+INT8 bundle
    pruning = res.report["pruning"]
    gate = pruning["gate"]
    assert gate["passed"] is True and gate["verdict"] == "passed"
    assert gate["ci95"][1] <= gate["max_drop"]  # the whole CI within the budget: decided on signal
    # the gate set grew until the CI was narrow enough (half-width <= budget / 3) or reached its cap
    assert gate["precise"] is True or gate["n_eval"] == pruning["settings"]["eval_samples_cap"]
    assert gate["n_eval"] >= 2000
    assert 0.5 <= pruning["sparsity"] <= 0.7
    assert pruning["rows"]["pruned"]["macs"] < pruning["rows"]["dense"]["macs"]
    settings = pruning["settings"]
    assert settings["distill_steps"] == 600 and settings["min_sparsity"] == 0.5
    assert all("widths" in p for p in pruning["probes"] if "sparsity" in p)
    assert "medge: prune auto: probe 1/" in res.stderr and "ETA" in res.stderr
    record = json.loads((bundle / "manifest.json").read_text())["model_meta"]["extra"]["pruning"]
    assert record["search"] == "auto" and record["metric"]["passed"] is True
