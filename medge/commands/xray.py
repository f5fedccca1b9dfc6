"""`medge xray serve|ingest|worklist|send|thresholds`: the point-of-care chest X-ray triage app.

A DICOM storage SCP receives radiographs, a worker pool classifies them with a bundle, urgent
findings move studies up a worklist that never loses or demotes a study, and the results go back
to PACS as DICOM SR (TID 1500).  See `medge.apps.xray`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medge.common.errors import UsageError

HELP = "chest X-ray triage: DICOM receiver, prioritised worklist, DICOM SR out"


def _durations(text: str) -> float:
    """'30m', '90s', '2h' or plain seconds → seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1].lower() in units:
            return float(text[:-1]) * units[text[-1].lower()]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration; use e.g. 30m, 90s or 2h") from None


def _tls_args(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help=f"DICOM TLS: our certificate ({role})")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--tls-ca", type=Path, metavar="PEM",
                   help="DICOM TLS: CA that peers' certificates must chain to (a client certificate is then "
                        "required by serve; send and SR delivery verify the peer against it)")


def _tls(args: argparse.Namespace):
    from medge.apps.tls import TlsFiles

    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)
    tls.check()  # before the model loads
    return tls


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="classifier bundle (from 'medge compile') or artifact")
    p.add_argument("--db", required=True, type=Path, help="worklist database (SQLite; created if missing)")
    p.add_argument("--store", required=True, type=Path, help="folder for received instances and SRs")
    p.add_argument("--sr-dest", action="append", default=[], metavar="AET@HOST:PORT",
                   help="send each SR by C-STORE here (repeatable; retried until it is accepted)")
    p.add_argument("--sr-dir", type=Path, help="also write each SR into this folder")
    p.add_argument("--thresholds", type=Path, help="operating points from 'medge xray thresholds' "
                   "(default: the model metadata's, else 0.5)")
    p.add_argument("--workers", type=int, default=2, help="analysis threads (default 2)")
    p.add_argument("--threads", type=int, help="runtime intra-op threads (default: the runtime's)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every image at full resolution (default: at the model's input size, from the "
                        "JPEG 2000 resolution level or JPEG DCT scale that is enough; slower, for checking)")
    p.add_argument("--max-wait", type=_durations, default=1800.0, metavar="DURATION",
                   help="flag a study not analysed after this long as overdue (default 30m)")
    p.add_argument("--min-free-mb", type=float, default=256.0,
                   help="refuse new instances (0xA700) below this much free disk (default 256)")
    p.add_argument("--keep-days", type=float, metavar="DAYS",
                   help="delete a stored instance this many days after its SR reached every --sr-dest "
                        "(audited; default: keep)")
    _tls_args(p, "presented to peers; SRs go to --sr-dest over TLS")


def _common_args() -> argparse.ArgumentParser:
    """--report/--json/--verbose accepted after the action too (SUPPRESS keeps the outer values)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--report", metavar="PATH", default=argparse.SUPPRESS, help="write the report as JSON to PATH")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the report as JSON instead of a table")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and debug logs")
    return common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    common = [_common_args()]
    serve = sub.add_parser("serve", parents=common, help="receive studies over DICOM and triage them until stopped")
    _engine_args(serve)
    serve.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--ae-title", default="MEDGE", help="our AE title (default MEDGE)")
    serve.add_argument("--allow", action="append", default=[], metavar="AET[@HOST]",
                       help="accept associations only from this calling AE title, and from HOST when given "
                            "(repeatable; default any, with a warning)")
    serve.add_argument("--max-associations", type=int, default=10, help="concurrent associations (default 10)")

    ingest = sub.add_parser("ingest", parents=common, help="triage DICOM files or folders offline, through the same durable path")
    ingest.add_argument("inputs", nargs="+", type=Path, help="DICOM files or folders")
    _engine_args(ingest)

    work = sub.add_parser("worklist", parents=common, help="show the prioritised worklist")
    work.add_argument("--db", required=True, type=Path, help="worklist database")
    work.add_argument("--watch", action="store_true", help="refresh every --interval seconds until Ctrl-C")
    work.add_argument("--interval", type=float, default=2.0, help="refresh interval for --watch (default 2 s)")
    work.add_argument("--show-accession", action="store_true", help="show accession numbers instead of study hashes")
    work.add_argument("--max-wait", type=_durations, default=1800.0, metavar="DURATION",
                      help="show waiting studies older than this as overdue (default 30m)")

    send = sub.add_parser("send", parents=common, help="C-STORE DICOM files to AET@host:port (prints per-file status)")
    send.add_argument("inputs", nargs="+", type=Path, help="DICOM files or folders")
    send.add_argument("--to", required=True, metavar="AET@HOST:PORT", help="destination")
    send.add_argument("--calling-ae", default="MEDGE-SCU", help="our AE title (default MEDGE-SCU)")
    send.add_argument("--associations", type=int, default=1, metavar="N",
                      help="send over N associations at once, files dealt round-robin (default 1)")
    _tls_args(send, "a client certificate for a peer that requires one")

    thr = sub.add_parser("thresholds", parents=common, help="choose per-finding thresholds at a sensitivity on labelled data")
    thr.add_argument("--bundle", required=True, help="classifier bundle or artifact")
    thr.add_argument("--eval", required=True, metavar="SOURCE", help="labelled data: folder, CSV, DICOM or synthetic:cxr")
    thr.add_argument("--sensitivity", type=float, default=0.9, help="target sensitivity per finding (default 0.9)")
    thr.add_argument("--samples", type=int, default=300, help="evaluation samples to draw (default 300)")
    thr.add_argument("-o", "--output", required=True, type=Path, help="operating-points JSON to write")


def _files(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files.extend(sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"{item} does not exist; pass DICOM files or folders")
    if not files:
        raise UsageError(f"no files in {', '.join(map(str, inputs))}")
    return files


def _config(args: argparse.Namespace):
    from medge.apps.xray.service import XrayConfig

    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    return XrayConfig(
        bundle=Path(args.bundle), db=args.db, store=args.store, sr_dest=args.sr_dest, sr_dir=args.sr_dir,
        thresholds=args.thresholds, workers=args.workers, threads=args.threads, max_wait_s=args.max_wait,
        min_free_mb=args.min_free_mb, ae_title=getattr(args, "ae_title", "MEDGE"),
        host=getattr(args, "host", "127.0.0.1"), port=getattr(args, "port", 11112),
        allow=getattr(args, "allow", []), max_associations=getattr(args, "max_associations", 10),
        tls=_tls(args), keep_days=args.keep_days, full_decode=args.full_decode)


def _serve(args: argparse.Namespace):
    import signal
    import threading

    from medge.apps.xray.service import XrayService

    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service = XrayService(_config(args))
    try:
        return service.run(stop)
    finally:
        service.close()


def _ingest(args: argparse.Namespace):
    from medge.apps.xray.service import XrayService

    files = _files(args.inputs)
    service = XrayService(_config(args))
    try:
        return service.ingest(files)
    finally:
        service.close()


def _worklist(args: argparse.Namespace):
    import signal
    import sys
    import time

    from medge.apps.xray.board import worklist_report
    from medge.apps.xray.worklist import Worklist
    from medge.common.errors import DataError

    if not args.db.is_file():
        raise DataError(f"no worklist database at {args.db}; start 'medge xray serve --db {args.db} …' first")
    worklist = Worklist(args.db)
    try:
        def read():
            return worklist_report(worklist, show_accession=args.show_accession, max_wait_s=args.max_wait)

        if args.watch:
            # Ctrl-C or SIGTERM ends the live view, also when the shell that started it ignores SIGINT
            # (a background job without job control, as under CI runners)
            previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                while True:
                    print("\033[2J\033[H" + read().to_table(), flush=True)
                    time.sleep(max(0.2, args.interval))
            except KeyboardInterrupt:
                print(file=sys.stderr)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        return read()
    finally:
        worklist.close()


def _send(args: argparse.Namespace):
    from medge.apps.xray.sender import SendReport, send_files

    tls = _tls(args)
    results = send_files(_files(args.inputs), args.to, calling_ae=args.calling_ae, associations=args.associations,
                         ssl_context=tls.client_context() if tls.enabled else None)
    return SendReport(kind="files", items=[vars(r) for r in results])


def _thresholds(args: argparse.Namespace):
    from medge.apps.xray.thresholds import choose_thresholds

    return choose_thresholds(Path(args.bundle), args.eval, args.sensitivity, args.output, samples=args.samples)


def run(args: argparse.Namespace):
    """Run the command."""
    return {"serve": _serve, "ingest": _ingest, "worklist": _worklist, "send": _send,
            "thresholds": _thresholds}[args.action](args)
