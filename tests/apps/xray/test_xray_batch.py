"""Queued studies are analysed in batches when the bundle takes one (issue #27): the claim keeps the
queue's order, a batch scores as the studies one by one, and `ingest` on an OpenVINO bundle runs them
in batches through the real CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from xray_helpers import URGENT_SEED, compiled_tiny_bundle, write_study


@pytest.fixture(scope="session")
def openvino_bundle(zoo_onnx, tmp_path_factory) -> Path:
    """`cxr-densenet-tiny` (batch fixed at 1 in the ONNX) compiled FP32 for intel-cpu (OpenVINO)."""
    return compiled_tiny_bundle(zoo_onnx, tmp_path_factory, "intel-cpu", "xray_openvino_bundle")


def test_claim_many_takes_the_most_urgent_untried_oldest_first(tmp_path):
    from medge.apps.xray.worklist import Worklist

    wl = Worklist(tmp_path / "wl.sqlite")
    for i in range(6):
        wl.add_received(sop_instance_uid=f"1.2.{i}", study_instance_uid=f"1.3.{i}", accession=f"A{i}", modality="DX",
                        path=tmp_path / f"{i}.dcm", received_at=100.0 + i)
    with sqlite3.connect(tmp_path / "wl.sqlite") as conn:  # an overdue study, and one tried before
        conn.execute("UPDATE studies SET priority = 3 WHERE sop_instance_uid = '1.2.4'")
        conn.execute("UPDATE studies SET attempts = 1 WHERE sop_instance_uid = '1.2.0'")
    first = wl.claim_many(3)
    assert [j.sop_instance_uid for j in first] == ["1.2.4", "1.2.1", "1.2.2"]
    assert [j.sop_instance_uid for j in wl.claim_many(8)] == ["1.2.3", "1.2.5", "1.2.0"]
    assert wl.claim_many(2) == [] and wl.queued_count() == 0
    assert {r["state"] for r in wl.rows()} == {"running"}
    wl.close()


def test_a_batch_scores_as_the_studies_one_by_one(openvino_bundle, xray_bundle):
    from medge.apps.xray.classifier import open_classifier

    rng = np.random.default_rng(0)
    with_batch = open_classifier(openvino_bundle)
    try:
        assert with_batch.max_batch == 8 and with_batch.batched is not with_batch.app_model
        xs = [rng.random(with_batch.app_model.input_shape, dtype=np.float32) for _ in range(3)]
        batch = with_batch.scores_batch(xs)
        for x, scores in zip(xs, batch):
            single = with_batch.scores(x)
            assert scores.keys() == single.keys()
            assert max(abs(scores[k] - single[k]) for k in scores) < 1e-4
    finally:
        with_batch.close()
    fixed = open_classifier(xray_bundle)  # ONNX Runtime, batch fixed at 1: one by one
    try:
        assert fixed.max_batch == 1 and fixed.batched is None
        assert fixed.scores_batch(xs) == [fixed.scores(x) for x in xs]
    finally:
        fixed.close()


def test_ingest_runs_queued_studies_in_batches_through_the_cli(openvino_bundle, run_cli, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        write_study(folder / f"s{i}.dcm", seed=URGENT_SEED if i == 0 else 10 + i)
    db = tmp_path / "wl.sqlite"
    run = run_cli("xray", "ingest", folder, "--bundle", openvino_bundle, "--db", db, "--store", tmp_path / "store",
                  "--workers", "1", report=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.report["analysed"] == 6
    with sqlite3.connect(db) as conn:
        batches = [json.loads(t).get("batch") for (t,) in conn.execute("SELECT timings FROM studies")]
    assert max(batches) > 1, batches  # one worker, six queued: claimed and run together
    assert all(1 <= b <= 8 for b in batches)
