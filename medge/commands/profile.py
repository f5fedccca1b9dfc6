"""`medge profile ARTIFACT|BUNDLE`: latency, memory and size on this machine or over SSH."""

from __future__ import annotations

import argparse

HELP = "measure load time, latency percentiles, throughput, peak memory and per-layer times"
EXAMPLE = ["medge profile build/cxr-intel", "medge profile build/cxr-jetson --device ssh://nvidia@jetson.local"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("artifact", help="model file (.onnx, .xml, .tflite, .engine) or a bundle folder")
    parser.add_argument("--runtime", help="runtime (default: from the bundle or the file suffix)")
    parser.add_argument("--device", default="local", help="'local' (default) or ssh://user@host[:port]")
    parser.add_argument("--runtime-device", help="runtime device: cpu, cuda, CPU, GPU, NPU (default: bundle's or cpu)")
    parser.add_argument("--precision", help="OpenVINO inference precision hint: f32 (CPU default), bf16, f16")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs after the first inference (default 10)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs (default 100)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the runtime's choice)")
    parser.add_argument("--inputs", help="data source for inputs (folder, DICOM, WFDB, .npz, synthetic:<task>); default random")
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs and the bootstrap (default 0)")
    parser.add_argument("--layers", type=int, default=10, help="report the N slowest layers (0: skip layer profiling)")
    parser.add_argument("--in-process", action="store_true", help="profile in this process instead of a fresh child")
    ssh = parser.add_argument_group("remote (--device ssh://...)")
    ssh.add_argument("--ssh-key", help="private key file for ssh/scp")
    ssh.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE", help="extra ssh -o option (repeatable)")
    ssh.add_argument("--remote-medge", default="medge", metavar="CMD", help="medge command on the device (default 'medge')")
    ssh.add_argument("--remote-python", metavar="PY", help="run 'PY -m medge_cli' on the device instead of --remote-medge")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.devices.profiling import ProfileConfig, profile_artifact

    options = {"precision": args.precision} if args.precision else {}
    config = ProfileConfig(
        artifact=args.artifact,
        runtime=args.runtime,
        runtime_device=args.runtime_device,
        threads=args.threads,
        warmup=args.warmup,
        runs=args.runs,
        inputs=args.inputs,
        seed=args.seed,
        top_layers=args.layers,
        isolate=not args.in_process,
        options=options,
    )
    if args.device == "local":
        return profile_artifact(config)
    from medge.devices.profiling import validate_config
    from medge.devices.remote import SshOptions, profile_remote

    validate_config(config)
    remote_cmd = f"{args.remote_python} -m medge_cli" if args.remote_python else args.remote_medge
    return profile_remote(config, args.device, SshOptions(key=args.ssh_key, options=args.ssh_option, remote_command=remote_cmd))
