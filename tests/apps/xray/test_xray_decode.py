"""Decoding at the model's resolution (issue #27): twins of reduced and full decodes through the real
`medge xray ingest`, the codec paths actually taken, and the per-stage timings in report and worklist."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from xray_helpers import worklist_json

SIZE = 1024  # 1024 → 256 for a 224×224 model: a reduction by 4
SCORE_TOLERANCE = 0.02  # max |reduced − full| per finding score; measured ≤ 0.007 on 2048² phantoms


def _jpeg_baseline(path: Path, seed: int) -> None:
    """An 8-bit MONOCHROME2 phantom stored as JPEG baseline (libjpeg via Pillow, quality 95)."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate

    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset

    ds = phantom_dataset(PhantomSpec(size=SIZE, bits_stored=8, bits_allocated=8, seed=seed))
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, "JPEG", quality=95)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    """JPEG 2000 (12- and 16-bit), JPEG baseline, uncompressed 16-bit and MONOCHROME1 with junk high bits."""
    from medge.apps.xray.phantoms import PhantomSpec, write_phantom

    folder = tmp_path_factory.mktemp("twins")
    write_phantom(folder / "j2k12.dcm", PhantomSpec(size=SIZE, seed=3, compress="jpeg2000"))
    write_phantom(folder / "j2k16.dcm", PhantomSpec(size=SIZE, seed=1, bits_stored=16, compress="jpeg2000"))
    write_phantom(folder / "raw16.dcm", PhantomSpec(size=SIZE, seed=3, bits_stored=16))
    write_phantom(folder / "mono1.dcm", PhantomSpec(size=SIZE, seed=4, photometric="MONOCHROME1", bits_stored=14,
                                                    rescale_slope=2.0, rescale_intercept=-100.0, junk_high_bits=True))
    _jpeg_baseline(folder / "jpeg8.dcm", seed=3)
    return folder


def test_codec_paths_and_exact_j2k_levels(twins):
    """Each form takes its reduced path; OpenJPEG level 0 through Pillow equals pydicom's decode
    (the 12-bit shift is right); a reduced level stays close to the block mean of the full image."""
    import pydicom

    from medge.apps.xray.decode import _decode_j2k, area_reduce, decode_reduced

    expected = {"j2k12": "j2k-reduce", "j2k16": "j2k-reduce", "jpeg8": "jpeg-draft", "raw16": "area", "mono1": "area"}
    for name, how in expected.items():
        ds = pydicom.dcmread(twins / f"{name}.dcm")
        frame, factor, got = decode_reduced(ds, 224, 224)
        assert (got, factor, frame.shape) == (how, 4, (256, 256)), name
        full = ds.pixel_array
        assert frame.dtype == full.dtype, name
        block_mean = area_reduce(full, 4).astype(np.float64)
        top = float(2 ** int(ds.BitsStored) - 1)
        # mono1 has junk high bits that only the mask removes: compare the others to the plain block mean
        if name != "mono1":
            assert np.abs(frame - block_mean).mean() / top < 0.01, name
        if how == "j2k-reduce":
            np.testing.assert_array_equal(_decode_j2k(ds, 1), full, err_msg=name)


def test_reduced_decode_scores_within_tolerance_of_full(twins, xray_bundle, run_cli, tmp_path):
    """Twins through the real CLI: `ingest` (reduced) and `ingest --full-decode` on the same studies."""
    results = {}
    for mode, extra in (("reduced", []), ("full", ["--full-decode"])):
        db = tmp_path / f"{mode}.sqlite"
        run = run_cli("xray", "ingest", twins, "--bundle", xray_bundle, "--db", db, "--store", tmp_path / mode,
                      *extra, report=True)
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.report["decode"] == mode and run.report["analysed"] == 5, run.report
        rows = worklist_json(run_cli, db)
        results[mode] = {Path(f["file"]).stem: next(r for r in rows if r["sop_instance_uid_hash"]
                                                    == f["sop_instance_uid_hash"]) for f in run.report["files"]}
        results[mode + "_report"] = run.report
    worst = 0.0
    for name, reduced in results["reduced"].items():
        full = results["full"][name]
        assert reduced["state"] == full["state"] == "analysed", (name, reduced, full)
        diff = max(abs(reduced["scores"][k] - full["scores"][k]) for k in full["scores"])
        worst = max(worst, diff)
        assert diff <= SCORE_TOLERANCE, (name, reduced["scores"], full["scores"])
        assert reduced["priority"] == full["priority"] and reduced["flags"] == [
            {**f, "score": reduced["scores"][f["finding"]]} for f in full["flags"]], name
    print(f"max score difference reduced vs full decode: {worst:.4f}")
    # the reduced decode is the faster one (the JPEG 2000 studies dominate the full decode)
    decode = {m: results[m + "_report"]["stages_ms"]["decode_ms"]["mean"] for m in ("reduced", "full")}
    assert decode["reduced"] < decode["full"], decode


def test_stage_timings_in_report_and_worklist(twins, xray_bundle, run_cli, tmp_path):
    """Every analysed study has its receive, store, queue, decode, preprocess, infer and SR time on the
    worklist (the SR outside the time to the flag); the report's p50/p95 per stage summarise exactly
    those rows."""
    from medge.apps.xray.worker import STAGES

    db = tmp_path / "wl.sqlite"
    run = run_cli("xray", "ingest", twins, "--bundle", xray_bundle, "--db", db, "--store", tmp_path / "s",
                  report=True)
    assert run.returncode == 0, run.stderr[-2000:]
    stages = run.report["stages_ms"]
    assert set(stages) == set(STAGES), stages
    for name, s in stages.items():
        assert s["n"] == run.report["analysed"] == 5, (name, s)
        assert 0 <= s["p50"] <= s["p95"] <= s["max"], (name, s)
    rows = worklist_json(run_cli, db)
    for row in rows:
        assert set(row["timings_ms"]) >= set(STAGES) and min(row["timings_ms"][k] for k in STAGES) >= 0, row
        # the analysis (claim → flag committed) covers decode, preprocess and infer, each counted once;
        # the SR is written after the flag, so its time is not in it (issue #27)
        t = row["timings_ms"]
        inside = sum(t[k] for k in ("decode_ms", "preprocess_ms", "infer_ms"))
        assert inside <= t["analysis_ms"] + 1.0 and t["sr_after_flag_ms"] >= t["sr_ms"] > 0, t
        assert row["sr"] == "written", row
    board = run_cli("xray", "worklist", "--db", db, report=True)
    assert board.report["stages_ms"] == stages
    assert "ms p50/p95: receive" in board.stdout
