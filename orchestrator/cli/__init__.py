"""The `matscreen` console script: one subcommand (group) per pipeline stage.

Data flows one way: chemspace -> structures/candidates -> reference labels (data) -> train ->
md -> analyze -> campaign.  Every subcommand has ``--help``.  Bad input prints one line
``matscreen: error: ...`` and exits with code 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from common.errors import InputError

# (module under orchestrator.commands, in the order they appear in --help)
STAGE_MODULES = [
    "chemspace",
    "reference",
    "models",
    "md",
    "campaign",
    "schedule",
    "benchmark",
    "demo",
]

EPILOG = """\
pipeline:  chemspace -> structures / candidates -> reference / data -> train / evaluate
           -> md -> analyze -> campaign (Ray + MLflow) -> schedule
start with:  matscreen demo            (the embedded default campaign)
             matscreen chemspace --help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matscreen",
        description="Active-learning screening of ionic conductors with machine-learned force fields.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f"orchestrator.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"orchestrator.cli.{name}":
                continue  # stage not built yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return f"matscreen {version('matscreen')}"
    except Exception:  # noqa: BLE001 - running from a source tree
        return "matscreen (source)"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if args.command is None and argv not in (None, []) else 0
    try:
        # credentials from the secrets file reach the stages through the environment only
        from orchestrator.ops.secrets import export_secrets_file

        export_secrets_file()
        rc = args.func(args)
    except InputError as exc:
        print(f"matscreen: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        name = exc.filename or str(exc)
        print(f"matscreen: error: file not found: {name}; check the path", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("matscreen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped reading: not an error of ours
        sys.stdout = open(os.devnull, "w")
        return 0
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
