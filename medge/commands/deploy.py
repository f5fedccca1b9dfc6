"""`medge deploy BUNDLE --device ssh://user@host --app ultrasound|ecg|xray [-- APP ARGS]`: run an app on a device."""

from __future__ import annotations

import argparse

from medge.commands.doctor import add_ssh_arguments, ssh_options

HELP = "copy a bundle to a device over SSH, verify it, and run an app on it as a service with a health check"
EXAMPLE = ["medge deploy build/us --device ssh://nvidia@jetson.local --app ultrasound -- --source /dev/video0",
           "medge deploy --status --device ssh://nvidia@jetson.local --app ultrasound"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's arguments."""
    parser.add_argument("bundle", nargs="?", help="bundle folder written by 'medge compile' or 'medge build'")
    parser.add_argument("--device", required=True, help="ssh://user@host[:port]")
    parser.add_argument("--app", required=True, choices=("ultrasound", "ecg", "xray"), help="the app to run with the bundle")
    parser.add_argument("--supervisor", choices=("systemd", "none"), default="systemd",
                        help="systemd (a unit, default) or none (a pidfile under --remote-dir)")
    parser.add_argument("--remote-dir", metavar="DIR", help="where bundles and state go (default /opt/medge, "
                                                            "or ~/.medge/deploy with --supervisor none)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="show whether the deployed app runs and answers")
    action.add_argument("--stop", action="store_true", help="stop the deployed app")
    parser.add_argument("--dry-run", action="store_true", help="print every step (and the unit) without connecting")
    parser.add_argument("--health-timeout", type=float, default=60.0, metavar="S",
                        help="seconds the app has to answer its health check (default 60)")
    add_ssh_arguments(parser)
    parse = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):  # everything after '--' is the app's, untouched
        args = list(args or [])
        cut = args.index("--") if "--" in args else len(args)
        namespace, extra = parse(args[:cut], namespace)
        namespace.app_args = args[cut + 1:]
        return namespace, extra

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def run(args: argparse.Namespace):
    """Run the command."""
    from medge.deploy.deploy import DeployConfig, run_deploy
    from medge.common.errors import MedgeError, UsageError

    app_args = list(getattr(args, "app_args", []))
    if args.health_timeout <= 0:
        raise UsageError(f"--health-timeout must be > 0 (got {args.health_timeout})")
    action = "status" if args.status else "stop" if args.stop else "deploy"
    if action != "deploy" and args.bundle:
        raise UsageError(f"--{action} acts on the deployed app; leave out the bundle ({args.bundle})")
    config = DeployConfig(device=args.device, app=args.app, bundle=args.bundle, app_args=tuple(app_args),
                          supervisor=args.supervisor, remote_dir=args.remote_dir, action=action, dry_run=args.dry_run,
                          health_timeout_s=args.health_timeout)
    report = run_deploy(config, ssh_options(args))
    if not report.ok:
        rolled_back = next((s["detail"] for s in report.steps if s["name"] == "roll back"), None)
        after = f"; {rolled_back}" if rolled_back else "; the previous deployment was left running"
        error = MedgeError(f"deploy step '{report.failed_step}' failed: {report.error}" + (after if action == "deploy" else ""))
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
