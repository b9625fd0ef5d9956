"""``leti predict``: how fast is this cell on that device? Asks the registered champion model.

A contract other tools script against: keep its options and its output lines exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUTPUT_FORMATS = (".parquet", ".csv")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict",
        usage="leti predict --device NAME [--space nb201] [--model URI] (ARCH... | --file FILE) [--output FILE]",
        help="predict the latency of cells on a device with its registered champion model",
        description="Predict each arch's latency on DEVICE with models:/leti-SPACE-DEVICE@champion (the model "
        "`make pipeline` registers), or with --model. Prints one JSON line per arch: "
        '{"arch": ..., "device": ..., "predicted_ms": ...}. A malformed arch is reported on stderr with its '
        "position (from 1) and the string, the others are still predicted, and the exit code is 1. The MLflow "
        "store is ./mlflow.db unless MLFLOW_TRACKING_URI is set.",
    )
    parser.add_argument("--device", required=True, metavar="NAME", help="device the latency is for, e.g. torch-cpu")
    parser.add_argument("--space", default="nb201", help="search space of the archs (default: %(default)s)")
    parser.add_argument("--model", metavar="URI", help="an MLflow model URI instead of the champion, e.g. models:/leti-nb201-torch-cpu/3 "
                        "or runs:/RUN/model, or a folder a predictor was saved to (leti evaluate --save)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("archs", nargs="*", default=[], metavar="ARCH", help="arch strings")
    source.add_argument("--file", type=Path, metavar="FILE", help="one arch per line (position = line number), or a .parquet/.csv table with an 'arch' column")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write arch, device, predicted_ms to FILE (.parquet or .csv)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from leti import api, spaces

    if not args.archs and args.file is None:
        raise ValueError("give ARCH arguments or --file FILE")
    if args.output is not None and args.output.suffix.lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--output {args.output}: unknown format (use {' or '.join(OUTPUT_FORMATS)})")
    space = spaces.get(args.space)
    entries = read_file(args.file) if args.file is not None else list(enumerate(args.archs, start=1))
    archs, malformed = [], 0
    for position, arch in entries:
        try:
            space.parse(arch)
        except ValueError as error:
            print(f"leti predict: arch {position} is malformed: {arch!r}: {error}", file=sys.stderr)
            malformed += 1
        else:
            archs.append(arch)
    if archs:
        predicted = api.load_predictor(args.device, args.space, args.model).predict(archs)
        write(archs, args.device, [float(value) for value in predicted], args.output)
    return 1 if malformed else 0


def read_file(path: Path) -> list[tuple[int, str]]:
    """(position, arch) pairs: table rows from 1, or the non-blank lines of a text file with their line numbers."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in OUTPUT_FORMATS:
        import polars as pl

        table = pl.read_parquet(path) if path.suffix.lower() == ".parquet" else pl.read_csv(path)
        if "arch" not in table.columns:
            raise ValueError(f"{path}: no 'arch' column (columns: {', '.join(table.columns)})")
        return [(row, str(arch)) for row, arch in enumerate(table["arch"].to_list(), start=1)]
    lines = path.read_text().splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def write(archs: list[str], device: str, predicted: list[float], output: Path | None) -> None:
    lines = [json.dumps({"arch": arch, "device": device, "predicted_ms": ms}) for arch, ms in zip(archs, predicted)]
    sys.stdout.write("\n".join(lines) + "\n")
    if output is not None:
        import polars as pl

        table = pl.DataFrame({"arch": archs, "device": [device] * len(archs), "predicted_ms": predicted})
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() == ".parquet":
            table.write_parquet(output)
        else:
            table.write_csv(output)
