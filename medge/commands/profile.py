"""`medge profile ARTIFACT|BUNDLE`: latency, memory and size on this machine or over SSH."""

from __future__ import annotations

import argparse
from pathlib import Path

from medge.common.errors import UsageError

HELP = "measure load time, latency percentiles, throughput, peak memory and per-layer times"
EXAMPLE = ["medge profile build/cxr-intel", "medge profile build/cxr-jetson --device ssh://nvidia@jetson.local"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("artifact", nargs="+",
                        help="model file (.onnx, .xml, .tflite, .engine) or a bundle folder (several with --farm)")
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
    farm = parser.add_argument_group("device farm (--farm FARM.yaml)")
    farm.add_argument("--farm", metavar="FARM.yaml", help="profile every bundle on the farm's devices at once (leased)")
    farm.add_argument("--target", help="--farm: devices of this target (default: each bundle's target)")
    how = farm.add_mutually_exclusive_group()
    how.add_argument("--all-devices", action="store_true", help="--farm: on every matching device (default)")
    how.add_argument("--per-target", type=int, metavar="N", help="--farm: on N devices of the target")
    farm.add_argument("--device-timeout", type=float, metavar="S", help="--farm: seconds per profile (default: farm file's)")
    farm.add_argument("--farm-output", default="farm-profile", metavar="DIR",
                      help="--farm: folder for farm_profile.json, farm_latency.png and each run's report")


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.devices.profiling import ProfileConfig, profile_artifact

    if args.farm:
        return _run_farm(args)
    if len(args.artifact) > 1:
        raise UsageError(f"one artifact at a time without --farm (got {len(args.artifact)}); profile several with --farm FARM.yaml")
    farm_only = [flag for flag, value in (("--target", args.target), ("--all-devices", args.all_devices),
                                          ("--per-target", args.per_target), ("--device-timeout", args.device_timeout))
                 if value]
    if farm_only:
        raise UsageError(f"{', '.join(farm_only)} need --farm FARM.yaml")
    args.artifact = args.artifact[0]
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


def _run_farm(args: argparse.Namespace):
    """`--farm`: every bundle on every matching device of the farm, leased, with per-device timeouts."""
    from medge.scale.farm import load_farm
    from medge.scale.farm_profile import profile_on_farm

    if args.device != "local":
        raise UsageError("--farm and --device are exclusive: the farm file names the devices")
    if args.per_target is not None and args.per_target < 1:
        raise UsageError(f"--per-target must be >= 1 (got {args.per_target})")
    if args.device_timeout is not None and args.device_timeout <= 0:
        raise UsageError(f"--device-timeout must be > 0 (got {args.device_timeout})")
    farm = load_farm(args.farm)
    passed = ["--warmup", str(args.warmup), "--runs", str(args.runs), "--layers", str(args.layers), "--seed", str(args.seed)]
    for flag, value in (("--runtime", args.runtime), ("--runtime-device", args.runtime_device),
                        ("--threads", args.threads), ("--inputs", args.inputs), ("--precision", args.precision)):
        if value is not None:
            passed += [flag, str(value)]
    return profile_on_farm(args.artifact, farm, Path(args.farm_output), target=args.target, per_target=args.per_target,
                           profile_args=passed, timeout_s=args.device_timeout)
