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
from medge.common.errors import MedgeError

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
    "doctor",
    "deploy",
    "matrix",
    "farm",
)


class UsageFailure(Exception):
    """An argparse usage error, raised instead of exiting so that main() can write --json/--report."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (main() prints it)
        raise UsageFailure(f"{message} (see '{self.prog} --help')")


def _epilog(module) -> str | None:
    """``example:`` lines of a command's help: its EXAMPLE, else the command in its docstring."""
    example = getattr(module, "EXAMPLE", None)
    if not example:
        first = (module.__doc__ or "").strip().splitlines()[:1]
        if first and first[0].startswith("`medge ") and "`" in first[0][1:]:
            example = first[0][1:first[0].index("`", 1)]
    if not example:
        return None
    lines = example if isinstance(example, (list, tuple)) else [example]
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command."""
    parser = _Parser(prog="medge", description="Take medical AI models from PyTorch to edge devices.",
                     epilog="example:\n  medge build cxr-densenet-tiny --target intel-cpu -o build/cxr-intel\n\n"
                            "'medge COMMAND --help' shows a command's options.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medge {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--report", metavar="PATH", help="write the report as JSON to PATH (also on failure)")
    common.add_argument("--json", action="store_true", help="print the report as JSON instead of a table (also on failure)")
    common.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"medge.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common], epilog=_epilog(module),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _json_targets(argv: list[str]) -> tuple[bool, str | None]:
    """(--json given, --report PATH) read straight from argv, for failures before or during parsing."""
    as_json, report = False, None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--json":
            as_json = True
        elif arg == "--report" and i + 1 < len(argv):
            report = argv[i + 1]
        elif arg.startswith("--report="):
            report = arg.split("=", 1)[1]
    return as_json, report


def _write(data: dict, as_json: bool, report_path: str | None) -> None:
    import json

    from medge.common.fileio import write_json_atomic

    if report_path:
        try:
            write_json_atomic(report_path, data)
        except OSError as exc:
            print(f"medge: error: cannot write --report {report_path}: {exc.strerror or exc}", file=sys.stderr)
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))


def _emit(report, args: argparse.Namespace, error: str | None = None) -> None:
    data = report.to_dict()
    data.setdefault("ok", bool(report.ok) and error is None)
    if error is not None:
        data["ok"], data["error"] = False, error
    as_json = bool(getattr(args, "json", False))
    _write(data, as_json, getattr(args, "report", None))
    if not as_json:
        print(report.to_table())


def _fail(message: str, code: int, argv: list[str]) -> int:
    """Print the one error line and write ``{"ok": false, "error": …}`` where --json/--report ask for it."""
    as_json, report_path = _json_targets(argv)
    _write({"ok": False, "error": message, "exit_code": code}, as_json, report_path)
    print(f"medge: error: {message}", file=sys.stderr)
    return code


def _check_report_path(path: str | None) -> None:
    from pathlib import Path

    from medge.common.errors import UsageError

    if path and Path(path).is_dir():
        raise UsageError(f"--report {path} is a folder; give a file path such as {Path(path) / 'report.json'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medge`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        build_parser().print_help()
        return 0
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        from medge.common.errors import did_you_mean

        return _fail(f"unknown command '{argv[0]}';{did_you_mean(argv[0], COMMANDS)} "
                     f"commands: {', '.join(COMMANDS)} (see 'medge --help')", 2, argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageFailure as exc:
        return _fail(exc.message, 2, argv)
    if args.verbose:
        import logging

        # medge's own loggers at DEBUG; third-party ones (matplotlib, jax, nncf) stay at INFO.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("medge").setLevel(logging.DEBUG)
    try:
        _check_report_path(getattr(args, "report", None))
        report = args._module.run(args)
        _emit(report, args)
        return 0 if report.ok else 1
    except MedgeError as exc:
        failed_report = getattr(exc, "report", None)
        if failed_report is not None:
            _emit(failed_report, args, error=str(exc))
        else:
            _write({"ok": False, "error": str(exc), "exit_code": exc.exit_code}, bool(getattr(args, "json", False)),
                   None if str(exc).startswith("--report ") else getattr(args, "report", None))
        if args.verbose:
            traceback.print_exc()
        print(f"medge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("medge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medge … | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
