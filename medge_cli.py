"""medge command line: parse → typed config → one API call → print the report / write its JSON.

Each sub-command lives in ``medge/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> Report``.  Command modules import only light modules at import time, so
start-up never pulls in torch, OpenVINO or TensorRT.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from medge import __version__
from medge.errors import MedgeError

COMMANDS = (
    "zoo",
    "export",
    "inspect",
    "quantize",
    "prune",
    "compile",
    "verify",
    "compare",
    "profile",
    "build",
    "devices",
    "ultrasound",
    "ecg",
    "xray",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"medge: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command."""
    parser = _Parser(prog="medge", description="Take medical AI models from PyTorch to edge devices.")
    parser.add_argument("--version", action="version", version=f"medge {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--report", metavar="PATH", help="write the report as JSON to PATH")
    common.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"medge.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _emit(report, args: argparse.Namespace) -> None:
    import json

    from medge.fileio import write_json_atomic

    data = report.to_dict()
    if getattr(args, "report", None):
        write_json_atomic(args.report, data)
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(report.to_table())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medge`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = args._module.run(args)
        _emit(report, args)
        return 0 if report.ok else 1
    except MedgeError as exc:
        failed_report = getattr(exc, "report", None)
        if failed_report is not None:
            _emit(failed_report, args)
        if args.verbose:
            traceback.print_exc()
        print(f"medge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
