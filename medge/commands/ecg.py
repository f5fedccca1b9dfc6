"""`medge ecg simulate|stream|reconstruct|fit`: the wearable ECG app (3 leads → 12 leads)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medge.apps.view_security import ViewSecurity
from medge.commands.common_args import add_view_security_arguments, view_security_from_args
from medge.common.errors import MedgeError, UsageError
from medge.common.reports import DictReport

HELP = "wearable ECG app: simulate a patch, stream and reconstruct 12 leads live, reconstruct offline, fit"
EXAMPLE = "medge ecg stream --model ecg-3to12 --port /dev/ttyACM0 --record rec --plot ecg.png --view browser"
PROTOCOL_CHOICES = ("medge", "openbci-cyton")
SHORT_WINDOW_S = 2.0  # a zoo model's window for hops under 1 s: its receptive field plus the hop, with room


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="PATH", default=argparse.SUPPRESS, help="write the report as JSON to PATH")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")


def _protocol(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES, default="medge", help="wire format (default medge)")
    p.add_argument("--channels", metavar="MAP", help="openbci-cyton: channels of II, V1, V5 (default II=1,V1=2,V5=3)")
    p.add_argument("--sample-rate", type=float, help="device rate in Hz (default 500 medge, 250 openbci-cyton)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands simulate, stream, reconstruct and fit."""
    sub = parser.add_subparsers(dest="ecg_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("simulate", help="device simulator: write frames of leads II, V1, V5 to a serial port")
    p.add_argument("--port", required=True, help="serial device or URL, or pty:LINK to create a pty pair linked at LINK")
    _protocol(p)
    p.add_argument("--source", default="synthetic", help="synthetic, or a WFDB record / DICOM ECG / NPZ to replay")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of signal to send (the source loops)")
    p.add_argument("--realtime", action="store_true", help="pace frames at the device rate")
    p.add_argument("--corrupt-rate", type=float, default=0.0, help="probability that a byte is damaged on the wire")
    p.add_argument("--drop-rate", type=float, default=0.0, help="probability that a frame is never sent")
    p.add_argument("--silence-at", type=float, metavar="T", help="fault: send nothing from T s of signal on ...")
    p.add_argument("--silence-for", type=float, metavar="S", help="... for S s (the patch keeps counting samples)")
    p.add_argument("--reopen-at", type=float, metavar="T", help="fault (pty: only): at T s close the pty and create "
                   "it again at the same path, like a USB device re-enumerating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ground-truth", metavar="OUT.npz", help="also write the samples sent and which must arrive")
    _common(p)
    p = sub.add_parser("stream", help="live 12-lead reconstruction from a serial stream")
    p.add_argument("--model", required=True, help="ECG reconstruction model (.onnx, bundle, or zoo name ecg-3to12)")
    p.add_argument("--port", required=True, help="serial device or URL (e.g. /dev/ttyACM0, socket://HOST:PORT)")
    _protocol(p)
    p.add_argument("--window", type=float, help="seconds of input per reconstruction: a model file's own window "
                   f"(it must match); a zoo model is exported at this window (default {SHORT_WINDOW_S:g} s for a "
                   "hop under 1 s, else 10 s)")
    p.add_argument("--hop", type=float, default=1.0, help="seconds between reconstructions (default 1; 0.25 "
                   "redraws four times a second)")
    p.add_argument("--mains", type=float, choices=(50, 60), help="notch out 50 or 60 Hz mains")
    p.add_argument("--record", metavar="OUT", help="write WFDB records OUT (3 leads) and OUT_12lead")
    p.add_argument("--view", default="none", help="browser[:HOST:PORT] for the live strip, or none")
    add_view_security_arguments(p)
    p.add_argument("--plot", metavar="OUT.png", help="12-lead paper plot of the last 10 s")
    p.add_argument("--seconds", type=float, help="stop after this many seconds of samples (gaps included)")
    p.add_argument("--give-up-after", type=float, metavar="S",
                   help="end the session when the link stays lost for S s (default: keep waiting)")
    p.add_argument("--threads", type=int, default=None, help="inference threads")
    _common(p)
    p = sub.add_parser("reconstruct", help="offline 12-lead reconstruction of WFDB / DICOM / NPZ input")
    p.add_argument("input", help="WFDB record or folder of records, DICOM ECG waveform, or NPZ")
    p.add_argument("--model", required=True)
    p.add_argument("-o", "--output", required=True, help="output WFDB record (a folder for folder input)")
    p.add_argument("--plot", metavar="OUT.png")
    p.add_argument("--dicom", metavar="OUT.dcm", help="also write a DICOM 12-lead ECG waveform")
    p.add_argument("--mains", type=float, choices=(50, 60))
    _common(p)
    p = sub.add_parser("fit", help="fit the reconstruction net to your own 12-lead WFDB records")
    p.add_argument("records", nargs="*", help="WFDB records (with or without .hea) or folders")
    p.add_argument("-o", "--output", required=True, help="output ONNX")
    p.add_argument("--init", default="ecg-3to12", choices=("ecg-3to12", "scratch"))
    p.add_argument("--epochs", type=int, default=40, help="at most this many epochs (default 40)")
    p.add_argument("--patience", type=int, default=4,
                   help="stop after this many epochs without a better validation loss (default 4)")
    p.add_argument("--no-augment", action="store_true",
                   help="train without amplitude / heart-rate / noise / wander augmentation")
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--test", nargs="+", metavar="RECORDS",
                   help="held-out 12-lead records (another source) to report net and linear r on; never fitted on")
    p.add_argument("--personalize", metavar="RECORD", help="instead: fine-tune on one patient's own 12-lead record "
                   "(its first part) and report the gain on its held-out rest")
    p.add_argument("--personal-train", type=float, default=0.5,
                   help="--personalize: share of the record to fine-tune on (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)


def run(args: argparse.Namespace) -> DictReport:
    """Dispatch to the chosen action."""
    return {"simulate": _simulate, "stream": _stream, "reconstruct": _reconstruct, "fit": _fit}[args.ecg_command](args)


def _device_rate(args: argparse.Namespace) -> float:
    from medge.apps.ecg.serial_reader import default_rate

    rate = args.sample_rate or default_rate(args.protocol)
    if rate <= 0:
        raise UsageError("--sample-rate must be > 0")
    return float(rate)


def _channel_map(args: argparse.Namespace) -> dict[str, int]:
    from medge.apps.ecg.cyton import parse_channel_map

    if args.channels and args.protocol != "openbci-cyton":
        raise UsageError("--channels applies to --protocol openbci-cyton only")
    return parse_channel_map(args.channels)


def _simulate(args: argparse.Namespace) -> DictReport:
    from medge.apps.ecg.simulator import open_output, simulate
    from medge.apps.ecg.sources import patch_samples

    rate = _device_rate(args)
    mapping = _channel_map(args)
    if args.seconds <= 0:
        raise UsageError("--seconds must be > 0")
    name, samples_uv = patch_samples(args.source, args.seconds, args.seed, rate)
    faults = _faults(args)
    out = open_output(args.port, args.baud, args.realtime)

    def progress(frac: float) -> None:
        print(f"\rsimulate: {frac * 100:5.1f}% of {args.seconds:g} s", end="", file=sys.stderr, flush=True)

    try:
        truth = simulate(out, samples_uv, rate_hz=int(rate), protocol=args.protocol, realtime=args.realtime,
                         corrupt_rate=args.corrupt_rate, drop_rate=args.drop_rate, seed=args.seed,
                         channel_map=mapping, progress=progress, faults=faults)
    finally:
        out.close()
    print(file=sys.stderr)
    if args.ground_truth:
        truth.save(args.ground_truth)
    return DictReport(name="ecg simulate", data={
        "port": args.port, "protocol": args.protocol, "source": name, "rate_hz": rate, "samples": len(samples_uv),
        "frames": {"sent": truth.frames_sent, "dropped": truth.frames_dropped, "damaged": truth.frames_damaged,
                   "overflow": truth.frames_overflow, "silenced": truth.frames_silenced},
        "reopens": truth.reopens,
        "bytes_corrupted": truth.bytes_corrupted, "host_disconnected": truth.host_disconnected, "samples_deliverable": int(truth.delivered.sum()),
        "ground_truth": args.ground_truth})


def _faults(args: argparse.Namespace):
    from medge.apps.ecg.simulator import Faults

    if (args.silence_at is None) != (args.silence_for is None):
        raise UsageError("--silence-at T and --silence-for S go together (e.g. --silence-at 5 --silence-for 8)")
    for name in ("silence_at", "silence_for", "reopen_at"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0 s")
    if args.reopen_at is not None and not args.port.startswith("pty:"):
        raise UsageError("--reopen-at recreates a pty; use it with --port pty:LINK")
    return Faults(args.silence_at, args.silence_for or 0.0, args.reopen_at)


def _stream(args: argparse.Namespace) -> DictReport:
    from medge.apps.ecg.ecg_model import load_lead_model
    from medge.apps.ecg.filters import design_sos
    from medge.apps.ecg.plot import live_strip  # noqa: F401 - imported before the port opens
    from medge.apps.ecg.provenance import Provenance
    from medge.apps.ecg.recording import SessionRecord
    from medge.apps.ecg.serial_reader import Receiver, open_port
    from medge.apps.ecg.session import plot_session, stream_report
    from medge.apps.ecg.stream import StreamConfig, run_stream

    rate = _device_rate(args)
    receiver = Receiver(args.protocol, _channel_map(args))
    if args.seconds is not None and args.seconds <= 0:
        raise UsageError("--seconds must be > 0")
    if args.give_up_after is not None and args.give_up_after <= 0:
        raise UsageError("--give-up-after must be > 0 s")
    if args.hop <= 0 or (args.window is not None and args.window <= 0):
        raise UsageError("--hop and --window must be > 0 s (e.g. --hop 0.25)")
    view = _open_view(args.view, view_security_from_args(args))
    model, app = load_lead_model(args.model, threads=args.threads, samples=_zoo_window_samples(args))
    record = None
    try:
        provenance = Provenance.of(model, app.ref.path, tool="medge ecg stream")
        record = SessionRecord(args.record, rate, provenance) if args.record else None
        model_window = model.samples / model.rate_hz
        if args.window is not None and abs(args.window - model_window) > 1e-6:
            raise UsageError(f"--window {args.window:g} s does not match the model's {model_window:g} s window; "
                             "export the model at that window (medge export ecg-3to12 --input-shape 1x3xSAMPLES) "
                             "or pass a zoo name")
        design_sos(rate, args.mains)  # imports scipy.signal and checks --mains before the port opens
        ser = open_port(args.port, args.baud)  # last: from here on the device's bytes are buffered
        config = StreamConfig(rate, args.hop, args.mains, args.seconds, args.give_up_after)
        result = run_stream(ser, receiver, model, config, reopen=lambda: open_port(args.port, args.baud), view=view,
                            record=record, log=lambda msg: print(f"medge ecg: {msg}", file=sys.stderr, flush=True))
    finally:
        app.close()
        if view is not None:
            view.close()
        if record is not None:
            record.close()
    if args.plot and result.twelve_mv.shape[1]:
        plot_session(args.plot, result, rate, provenance)
    report = stream_report(result, receiver.stats, port=args.port, protocol=args.protocol, rate_hz=rate,
                           hop_s=args.hop, model_info=app.describe(), provenance=provenance,
                           record=record.written() if record is not None else {}, plot=args.plot,
                           view_url=view.url if view is not None else None)
    if result.error is not None:
        err = MedgeError(str(result.error))
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _zoo_window_samples(args: argparse.Namespace) -> int | None:
    """The window (samples at the model's rate) to export a zoo --model at; None for a file or the card's own."""
    from medge.apps.zoo_cache import is_zoo_name

    if not is_zoo_name(args.model):
        return None
    from medge.zoo import get_card

    window = args.window if args.window is not None else SHORT_WINDOW_S if args.hop < 1 else None
    return None if window is None else round(window * float(get_card(args.model).preprocessing["sample_rate_hz"]))


def _open_view(spec: str, security: ViewSecurity):
    from medge.apps.view import BrowserView, parse_view

    kind, host, port = parse_view(spec)
    if kind == "none":
        return None
    if kind != "browser":
        raise UsageError(f"--view {spec}: the ECG app shows its strip in the browser; use browser[:HOST:PORT] or none")
    view = BrowserView(host, port, title="medge ecg: live 12-lead", port_hint="choose another with --view browser:HOST:PORT",
                       security=security)
    view.start()
    print(f"medge ecg: live view at {view.open_url}", file=sys.stderr)
    return view


def _reconstruct(args: argparse.Namespace) -> DictReport:
    from medge.apps.ecg.ecg_model import load_lead_model
    from medge.apps.ecg.offline import reconstruct_inputs
    from medge.apps.ecg.provenance import Provenance
    from medge.apps.ecg.sources import input_paths

    paths = input_paths(args.input)
    folder = Path(args.input).is_dir()
    if folder and args.dicom:
        raise UsageError("--dicom writes one file; pass a single record, not a folder")

    def progress(k: int, n: int) -> None:
        print(f"\rreconstruct: {k}/{n}", end="", file=sys.stderr, flush=True)

    model, app = load_lead_model(args.model)
    try:
        provenance = Provenance.of(model, app.ref.path)
        data = reconstruct_inputs(paths, Path(args.output), folder, model, provenance, mains=args.mains,
                                  dicom=args.dicom, plot=args.plot, progress=progress)
        print(file=sys.stderr)
    finally:
        app.close()
    for line in data["warnings"]:
        print(f"medge ecg: warning: {line}", file=sys.stderr)
    return DictReport(name="ecg reconstruct", data={"input": args.input, "output": args.output,
                                                    "model": app.describe(), **data})


def _fit(args: argparse.Namespace) -> DictReport:
    from medge.apps.ecg.fit import Schedule, run_fit

    if args.patience < 1:
        raise UsageError("--patience must be ≥ 1")
    schedule = Schedule(args.epochs, args.seed, patience=args.patience, augment=not args.no_augment)
    if args.personalize:
        from medge.apps.ecg.personalize import run_personalize

        if args.records or args.test:
            raise UsageError("--personalize RECORD fits one patient's record; drop the other records and --test")
        return DictReport(name="ecg fit --personalize", data=run_personalize(
            args.personalize, args.output, init=args.init, schedule=schedule, train_fraction=args.personal_train))
    if not args.records:
        raise UsageError("pass 12-lead WFDB records or folders to fit on (or --personalize RECORD)")
    data = run_fit(args.records, args.output, init=args.init, schedule=schedule, val_split=args.val_split,
                   test=args.test)
    for line in data["warnings"]:
        print(f"medge ecg fit: warning: {line}", file=sys.stderr)
    return DictReport(name="ecg fit", data=data)
