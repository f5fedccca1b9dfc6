"""`medge doctor [--device ssh://user@host]`: what this machine (or a device) has and can run."""

from __future__ import annotations

import argparse

HELP = "list Python, CPU flags, runtimes, cv2, serial/video devices, Jetson facts and disk; which apps and targets are ready"
EXAMPLE = ["medge doctor", "medge doctor --device ssh://nvidia@jetson.local --report jetson-doctor.json"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("--device", default="local", help="'local' (default) or ssh://user@host[:port]")
    add_ssh_arguments(parser)


def add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    """The SSH options of a command with ``--device ssh://…`` (as `medge profile` has them)."""
    ssh = parser.add_argument_group("remote (--device ssh://...)")
    ssh.add_argument("--ssh-key", help="private key file for ssh/scp")
    ssh.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE", help="extra ssh -o option (repeatable)")
    ssh.add_argument("--remote-medge", default="medge", metavar="CMD", help="medge command on the device (default 'medge')")


def ssh_options(args: argparse.Namespace):
    """`SshOptions` from the arguments `add_ssh_arguments` added."""
    from medge.devices.remote import SshOptions

    return SshOptions(key=args.ssh_key, options=args.ssh_option, remote_command=args.remote_medge)


def run(args: argparse.Namespace):
    """Run the command."""
    if args.device == "local":
        from medge.deploy.doctor import run_doctor

        return run_doctor()
    from medge.deploy.doctor import report_from_dict
    from medge.devices.remote import SshSession, SshTarget, remote_medge_json

    target = SshTarget.parse(args.device)
    with SshSession(target, ssh_options(args)) as session:
        data = remote_medge_json(session, ["doctor"], timeout=120)
    return report_from_dict(data, target.label)
