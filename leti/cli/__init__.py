"""The ``leti`` command. Each subcommand lives in its own module with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from leti import errors

COMMANDS = ["arch", "measure", "measure_ops", "measure_model", "measure_kernels", "ingest", "evaluate", "predict", "predict_model",
            "evaluate_transfer", "plan_shots", "adapt"]
"""Modules of ``leti.cli``, in the order ``leti --help`` lists them."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of the command module ``only`` alone.

    Running one command imports that command's module only, so ``leti predict`` does not pay for
    the libraries measuring needs.
    """
    parser = argparse.ArgumentParser(
        prog="leti",
        description="leti: measure, version and predict neural-network inference latency.",
        epilog="Run `leti COMMAND --help` for a command's options. The full pipeline is `dvc repro`.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [only] if only else COMMANDS:
        importlib.import_module(f"leti.cli.{name}").register(commands)
    return parser


def command_module(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names (its first non-option word), if it names one."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    module = (word or "").replace("-", "_")
    return module if module in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command_module(argv)).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except errors.USER_ERRORS as error:
        return errors.report(f"leti {args.command}", error)
