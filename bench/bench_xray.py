"""X-ray triage app bench: `medge xray serve` end to end vs a naive per-file loop, plus kill -9 trials.

Measured in one run on one machine (2 shared cores here, so figures are noisy; the ratios against
the peer, measured in the same run, are what to read):

* studies/s end to end (C-STORE received → classified → SR stored) for N synthetic 2048×2048
  16-bit studies sent as fast as one association allows, uncompressed and JPEG 2000 lossless, and,
  with ``--associations N``, as fast as N associations sending at once allow (a PACS router's
  parallel queues: one study's durable store overlaps the next one's transfer);
* the peer: a naive loop per file (pydicom read → preprocess → infer → highdicom SR → write);
* `serve --full-decode` (every image decoded at full resolution, as before issue #27) in the same
  rounds, and the per-stage p50/p95 (receive, store, queue, decode, preprocess, infer, SR) of both;
* time-to-flag p50/p95 (C-STORE start → flag committed; the SR is written after it, also shown) at a
  steady 5 studies/s;
* kill -9 trials: SIGKILL `serve` during a burst of C-STOREs, restart, count acknowledged studies
  that are not analysed with their SR delivered (the goal is 0).

    python bench/bench_xray.py [--bundle DIR] [--studies 40] [--associations 4] [--kill-trials 20]
                               [--json out.json]

Without --bundle it builds the DenseNet-121 INT8 intel-cpu bundle with `medge export` + `medge compile`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def medge(*args: str) -> list[str]:
    exe = shutil.which("medge")
    return ([exe] if exe else [sys.executable, str(Path(__file__).resolve().parents[1] / "medge_cli.py")]) + list(args)


def log(msg: str) -> None:
    print(f"[bench_xray] {msg}", file=sys.stderr, flush=True)


def build_bundle(work: Path) -> Path:
    """DenseNet-121 (CheXNet layout) exported and compiled INT8 for intel-cpu (synthetic calibration)."""
    onnx, bundle = work / "densenet121.onnx", work / "dn121-int8"
    log("exporting cxr-densenet121 and compiling INT8 for intel-cpu (a few minutes)")
    subprocess.run(medge("export", "cxr-densenet121", "-o", str(onnx)), check=True, capture_output=True)
    subprocess.run(medge("compile", str(onnx), "--target", "intel-cpu", "--precision", "int8", "--calib",
                         "synthetic:cxr", "--option", "calib_samples=100", "-o", str(bundle)),
                   check=True, capture_output=True)
    return bundle


def make_studies(folder: Path, n: int, compress: bool, bases: list) -> list[Path]:
    """N 2048×2048 16-bit studies with fresh UIDs; pixel data (and its JPEG 2000 code stream) shared."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = bases[i % len(bases)][1 if compress else 0]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        path = folder / f"study{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class Serve:
    """`medge xray serve` in a subprocess on a free port."""

    def __init__(self, bundle: Path, work: Path, extra: list[str] = ()) -> None:
        self.db = work / "wl.sqlite"
        cmd = medge("xray", "serve", "--port", "0", "--bundle", str(bundle), "--db", str(self.db), "--store",
                    str(work / "store"), "--workers", "2", *extra)
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.port = 0
        for line in self.proc.stderr:
            if "listening on" in line:
                self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                break
        if not self.port:
            raise RuntimeError("serve did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def rows(self) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute("SELECT sop_instance_uid, state, received_at, analysed_at, timings, sr_state"
                                " FROM studies").fetchall()

    def wait_done(self, n: int, timeout: float = 1800) -> list[sqlite3.Row]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if len(rows) >= n and all(r["state"] == "not_analysed" or r["sr_state"] == "done" for r in rows):
                return rows
            time.sleep(0.05)
        raise RuntimeError("studies not analysed in time")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(120)


def sr_ready(row: sqlite3.Row) -> float:
    """When a study was done: its SR written (the flag is committed before, at ``analysed_at``)."""
    return row["analysed_at"] + json.loads(row["timings"]).get("sr_after_flag_ms", 0.0) / 1e3


def stages(rows: list[sqlite3.Row]) -> dict:
    """Per-stage p50/p95 (ms) over the analysed rows, as the worklist shows them."""
    from medge.apps.xray.worker import STAGES, stage_summary

    timings = [json.loads(r["timings"]) for r in rows if r["state"] == "analysed"]
    return stage_summary({name: [t[name] for t in timings if name in t] for name in STAGES})


def serve_throughput(bundle: Path, files: list[Path], work: Path, extra: list[str] = (), associations: int = 1) -> dict:
    from medge.apps.xray.sender import send_files

    server = Serve(bundle, work, ["--sr-dir", str(work / "sr"), *extra])
    try:
        t0 = time.time()
        results = send_files(files, f"MEDGE@127.0.0.1:{server.port}", timeout=300, associations=associations)
        failed = [Path(r.file) for r in results if not r.ok]
        if failed:  # an association dropped under load: the sender resends, as a modality would
            log(f"resending {len(failed)} studies")
            assert all(r.ok for r in send_files(failed, f"MEDGE@127.0.0.1:{server.port}", timeout=300))
        rows = server.wait_done(len(files))
        t1 = max(sr_ready(r) for r in rows)
    finally:
        server.stop()
    analysed = sum(r["state"] == "analysed" for r in rows)
    return {"studies": len(files), "analysed": analysed, "seconds": t1 - t0, "studies_per_s": len(files) / (t1 - t0),
            "associations": associations, "batches": batch_sizes(rows), "stages_ms": stages(rows)}


def batch_sizes(rows: list[sqlite3.Row]) -> dict[int, int]:
    """How many analysed studies ran in an inference batch of each size."""
    sizes = [json.loads(r["timings"]).get("batch", 1) for r in rows if r["state"] == "analysed"]
    return {size: sizes.count(size) for size in sorted(set(sizes))}


def naive_loop(bundle: Path, files: list[Path], work: Path) -> dict:
    """The peer: what a user would write first, one file after the other."""
    import pydicom

    from medge.apps.model import AppModel
    from medge.apps.xray.sr import Finding, build_sr
    from medge.calibration.dicom import dicom_to_unit

    out = work / "naive_sr"
    out.mkdir(parents=True, exist_ok=True)
    with AppModel.open(bundle) as model:
        labels = model.meta.labels
        t0 = time.perf_counter()
        for i, path in enumerate(files):
            ds = pydicom.dcmread(path)
            scores = model.predict(dicom_to_unit(ds.pixel_array, ds, model.preprocessing))[0].ravel()
            findings = [Finding(n, float(s), 0.5, bool(s >= 0.5)) for n, s in zip(labels, scores)]
            build_sr(ds, findings, model_name=model.meta.model, model_sha256="0" * 64,
                     ops_version="naive").save_as(out / f"{i}.dcm", enforce_file_format=True)
        seconds = time.perf_counter() - t0
    return {"studies": len(files), "seconds": seconds, "studies_per_s": len(files) / seconds}


def time_to_flag(bundle: Path, files: list[Path], work: Path, rate: float) -> dict:
    """Paced arrivals at `rate`/s on one association; C-STORE start → result committed, per study."""
    import pydicom
    from pynetdicom import AE

    server = Serve(bundle, work, ["--sr-dir", str(work / "sr")])
    started: dict[str, float] = {}
    try:
        datasets = [pydicom.dcmread(f) for f in files]
        ae = AE(ae_title="PACED")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="MEDGE")
        t_start = time.monotonic()
        for i, ds in enumerate(datasets):
            delay = t_start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started[str(ds.SOPInstanceUID)] = time.time()
            assoc.send_c_store(ds)
        achieved = len(datasets) / (time.monotonic() - t_start)
        assoc.release()
        rows = server.wait_done(len(files))
    finally:
        server.stop()
    ttf = [r["analysed_at"] - started[r["sop_instance_uid"]] for r in rows]  # to the flag's commit
    tts = [sr_ready(r) - started[r["sop_instance_uid"]] for r in rows]  # to the SR written
    return {"studies": len(files), "target_rate": rate, "achieved_rate": achieved,
            "p50_s": float(np.percentile(ttf, 50)), "p95_s": float(np.percentile(ttf, 95)), "max_s": max(ttf),
            "sr_p50_s": float(np.percentile(tts, 50)), "sr_p95_s": float(np.percentile(tts, 95))}


class Sink:
    """A pynetdicom storage SCP as the SR destination: which source images got their SR."""

    def __init__(self) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.sources: set[str] = set()
        ae = AE(ae_title="SINK")
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.address = f"SINK@127.0.0.1:{self.server.server_address[1]}"

    def _store(self, event) -> int:
        ev = event.dataset.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        self.sources.add(str(ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        return 0


def kill9_trials(bundle: Path, trials: int, work: Path, size: int = 512, per_trial: int = 40) -> dict:
    """SIGKILL serve mid-burst `trials` times on one database, then check every acknowledged study."""
    import pydicom
    from pynetdicom import AE

    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset

    sink = Sink()
    rng = np.random.default_rng(0)
    acknowledged: set[str] = set()
    per = []
    base = phantom_dataset(PhantomSpec(size=size, seed=3))
    for trial in range(trials):
        server = Serve(bundle, work, ["--sr-dest", sink.address])
        ae = AE(ae_title="BURST")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        ae.add_requested_context(base.SOPClassUID, base.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="MEDGE")
        # The kill lands mid-burst on any machine: 0-50 ms after a random acknowledgement, so while the
        # next C-STORE is in flight (a fixed 0.2-1.5 s timer fired after the whole burst on fast hosts).
        kill_after = int(rng.integers(1, per_trial - 1))
        killer = threading.Timer(rng.uniform(0.0, 0.05), os.kill, (server.proc.pid, signal.SIGKILL))
        ok = sent = 0
        for _ in range(per_trial):
            uid = pydicom.uid.generate_uid()
            base.SOPInstanceUID = uid
            try:
                status = assoc.send_c_store(base)
            except Exception:  # noqa: BLE001 - the server died mid-transfer
                break
            sent += 1
            if status and "Status" in status and int(status.Status) == 0:
                acknowledged.add(uid)
                ok += 1
                if ok == kill_after:
                    killer.start()
            if not assoc.is_established:
                break
        if not killer.is_alive() and not killer.finished.is_set():  # the burst ended before the kill
            killer.start()
        killer.join()
        server.proc.wait(60)
        if assoc.is_established:
            assoc.abort()
        per.append({"acknowledged": ok, "sent": sent})
        log(f"kill -9 trial {trial + 1}/{trials}: {ok} acknowledged before the kill")
    final = Serve(bundle, work, ["--sr-dest", sink.address])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rows = final.rows()
        done = {r["sop_instance_uid"] for r in rows if r["state"] == "analysed"}
        settled = all(r["state"] in ("analysed", "not_analysed") for r in rows)
        if (acknowledged <= done and acknowledged <= sink.sources) or (settled and done <= sink.sources):
            break
        time.sleep(0.2)
    final.stop()
    sink.server.shutdown()
    done = {r["sop_instance_uid"] for r in final.rows() if r["state"] == "analysed"}
    lost = acknowledged - (done & sink.sources)
    return {"trials": trials, "acknowledged": len(acknowledged), "lost": len(lost), "per_trial": per}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="classifier bundle (default: build DenseNet-121 INT8 intel-cpu)")
    parser.add_argument("--studies", type=int, default=40, help="studies per throughput run (default 40)")
    parser.add_argument("--paced", type=int, default=30, help="studies in the 5/s time-to-flag run (default 30)")
    parser.add_argument("--kill-trials", type=int, default=20, help="kill -9 trials (default 20; 0 skips)")
    parser.add_argument("--kill-only", action="store_true", help="run only the kill -9 trials")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved serve/full-decode/naive rounds (default 2)")
    parser.add_argument("--associations", type=int, default=4,
                        help="also send over this many associations at once (default 4; 1 skips)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from medge.apps.xray.phantoms import PhantomSpec, phantom_dataset, phantom_image

    work = Path(tempfile.mkdtemp(prefix="bench-xray-"))
    bundle = args.bundle or build_bundle(work)
    if args.kill_only:
        k = kill9_trials(bundle, args.kill_trials, work / "kill9")
        print(f"kill -9: {k['trials']} trials, {k['acknowledged']} acknowledged studies, {k['lost']} lost")
        if args.json:
            args.json.write_text(json.dumps({"bundle": str(bundle), "kill9": k}, indent=2))
        return 0
    log("making 2048×2048 16-bit studies (3 phantoms, JPEG 2000 encoded once each)")
    bases = []
    for seed in (1, 3, 4):
        image = phantom_image(2048, seed)[0]
        bases.append((phantom_dataset(PhantomSpec(size=2048, bits_stored=16, seed=seed), image),
                      phantom_dataset(PhantomSpec(size=2048, bits_stored=16, seed=seed, compress="jpeg2000"), image)))
    results: dict = {"bundle": str(bundle), "cpus": os.cpu_count(), "runs": {}}
    for kind, compress in (("uncompressed", False), ("jpeg2000", True)):
        files = make_studies(work / kind, args.studies, compress, bases)
        # Interleave service and peer, twice, so that load from other tenants hits both alike.
        serve_runs, multi_runs, full_runs, naive_runs = [], [], [], []
        for round_ in range(args.rounds):
            log(f"{kind}: round {round_ + 1}: serve")
            serve_runs.append(serve_throughput(bundle, files, work / f"{kind}-serve{round_}"))
            if args.associations > 1:
                log(f"{kind}: round {round_ + 1}: serve, {args.associations} associations")
                multi_runs.append(serve_throughput(bundle, files, work / f"{kind}-multi{round_}",
                                                   associations=args.associations))
            log(f"{kind}: round {round_ + 1}: serve --full-decode")
            full_runs.append(serve_throughput(bundle, files, work / f"{kind}-full{round_}", ["--full-decode"]))
            log(f"{kind}: round {round_ + 1}: naive loop")
            naive_runs.append(naive_loop(bundle, files, work / f"{kind}-naive{round_}"))
        serve_rate = statistics.median(r["studies_per_s"] for r in serve_runs)
        full_rate = statistics.median(r["studies_per_s"] for r in full_runs)
        naive_rate = statistics.median(r["studies_per_s"] for r in naive_runs)
        multi_rate = statistics.median(r["studies_per_s"] for r in multi_runs) if multi_runs else float("nan")
        results["runs"][kind] = {"serve": serve_runs, "serve_associations": multi_runs, "full_decode": full_runs,
                                 "naive": naive_runs, "serve_studies_per_s": serve_rate,
                                 "serve_associations_studies_per_s": multi_rate,
                                 "full_decode_studies_per_s": full_rate, "naive_studies_per_s": naive_rate,
                                 "ratio_vs_naive": serve_rate / naive_rate, "associations_ratio_vs_naive":
                                 multi_rate / naive_rate}
    log("time-to-flag at 5 studies/s")
    paced = make_studies(work / "paced", args.paced, False, bases)
    results["time_to_flag"] = time_to_flag(bundle, paced, work / "paced-serve", 5.0)
    if args.kill_trials:
        results["kill9"] = kill9_trials(bundle, args.kill_trials, work / "kill9")

    un, j2k, ttf = results["runs"]["uncompressed"], results["runs"]["jpeg2000"], results["time_to_flag"]
    print(f"\nX-ray triage bench ({os.cpu_count()} CPUs, shared: noisy), bundle {bundle.name}")
    multi = f"serve ×{args.associations}"
    print(f"{'':28}{'serve':>10}{multi:>10}{'full decode':>12}{'naive loop':>12}{'ratio':>8}{'ratio ×N':>10}")
    for name, run in (("uncompressed studies/s", un), ("JPEG 2000 studies/s", j2k)):
        print(f"{name:28}{run['serve_studies_per_s']:>10.2f}{run['serve_associations_studies_per_s']:>10.2f}"
              f"{run['full_decode_studies_per_s']:>12.2f}{run['naive_studies_per_s']:>12.2f}"
              f"{run['ratio_vs_naive']:>8.2f}{run['associations_ratio_vs_naive']:>10.2f}")
        for label, runs in (("serve", run["serve"]), (multi, run["serve_associations"])):
            if runs:
                print(f"  {label} inference batch sizes (last round): {runs[-1]['batches']}")
    for kind, run in (("uncompressed", un), ("JPEG 2000", j2k)):
        print(f"{kind} stages, ms p50/p95 (serve --full-decode → serve, last round):")
        after, before = run["serve"][-1]["stages_ms"], run["full_decode"][-1]["stages_ms"]
        for name, s in after.items():
            b = before.get(name, {})
            print(f"  {name.removesuffix('_ms'):12}{b.get('p50', float('nan')):>9.1f}/{b.get('p95', float('nan')):<9.1f}"
                  f" → {s['p50']:>8.1f}/{s['p95']:.1f}")
    print(f"time-to-flag at {ttf['achieved_rate']:.2f}/s: p50 {ttf['p50_s']:.3f} s, p95 {ttf['p95_s']:.3f} s, "
          f"max {ttf['max_s']:.3f} s; to the SR written: p50 {ttf['sr_p50_s']:.3f} s, p95 {ttf['sr_p95_s']:.3f} s")
    if "kill9" in results:
        k = results["kill9"]
        print(f"kill -9: {k['trials']} trials, {k['acknowledged']} acknowledged studies, {k['lost']} lost")
    best = max(un["serve_studies_per_s"], un["serve_associations_studies_per_s"])
    print("goals: ≥ 10 studies/s uncompressed: " + ("met" if best >= 10 else "NOT met")
          + "; ≥ 5 studies/s JPEG 2000: " + ("met" if max(j2k["serve_studies_per_s"],
                                                          j2k["serve_associations_studies_per_s"]) >= 5 else "NOT met")
          + "; p95 time-to-flag ≤ 1 s: " + ("met" if ttf["p95_s"] <= 1.0 else "NOT met")
          + ("; 0 lost in kill -9: " + ("met" if results["kill9"]["lost"] == 0 else "NOT met")
             if "kill9" in results else ""))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work / "uncompressed", ignore_errors=True)
    shutil.rmtree(work / "jpeg2000", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
