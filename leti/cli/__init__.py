"""The ``leti`` command. Each subcommand lives in its own module with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from leti.cli import arch, evaluate, ingest, measure, measure_ops
from leti.devices.base import BackendUnavailableError, DeviceError

COMMANDS = [arch, measure, measure_ops, ingest, evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leti",
        description="leti: measure, version and predict neural-network inference latency.",
        epilog="Run `leti COMMAND --help` for a command's options. The full pipeline is `dvc repro`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, DeviceError, BackendUnavailableError) as error:  # one line
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"leti {args.command}: error: {message}", file=sys.stderr)
        return 2
