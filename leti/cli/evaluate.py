"""``leti evaluate``: the BRP-NAS protocol for one predictor on one device, metrics as JSON.

Other tools script against this command; keep its options and the keys of its JSON exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leti import predictors, spaces
from leti.predictors import evaluation
from leti.store import reader


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` options as a dict, each value parsed by :func:`parse_value`."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = parse_value(value)
    return overrides


def parse_value(text: str) -> object:
    """``--set`` values are JSON when they parse as JSON (numbers, booleans), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="fit and score a predictor on one device (BRP-NAS protocol)",
        description="Split one device's cells (those with an input->output path; the others are excluded and "
        "counted) into TRAIN_SIZE train, VAL_SIZE validation and the rest test by SEED, fit the predictor, and "
        "write test metrics: acc_1pct, acc_5pct, acc_10pct (percent), rmse_ms, mape, spearman, kendall, n_train, "
        "n_val, n_test, fit_seconds, predict_seconds, predictor (the family chosen, for auto). A store holding "
        "several measurement configurations of the device is an error naming them, unless --config picks one.",
    )
    parser.add_argument("--latency", type=Path, required=True, metavar="PATH", help="latency store folder or latency table file")
    parser.add_argument("--device", required=True)
    parser.add_argument("--space", default=spaces.DEFAULT, metavar="NAME",
                        help=f"search space of the cells: {', '.join(sorted(spaces.SPACES))} (default: %(default)s)")
    parser.add_argument("--predictor", required=True, help=f"one of: {', '.join(sorted(predictors.FAMILIES))}")
    parser.add_argument("--train-size", type=int, default=900)
    parser.add_argument("--val-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="metrics JSON file")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a predictor parameter, e.g. --set batch_size=32 for gcn (repeatable)",
    )
    parser.add_argument("--save", type=Path, metavar="DIR", help="also save the fitted predictor here")
    parser.add_argument("--statistic", default="median_ms", choices=reader.STATISTICS,
                        help="which summary of each cell's timed runs to predict (default: %(default)s)")
    parser.add_argument("--config", metavar="ID", help="the measurement configuration (config_id) to use when the store "
                        "holds several for the device")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.set)
    if args.predictor not in predictors.FAMILIES:
        raise KeyError(f"unknown predictor {args.predictor!r} (known: {', '.join(sorted(predictors.FAMILIES))})")
    policy = reader.ReadPolicy(statistic=args.statistic, configuration=args.config or reader.ONLY, duplicates="mean")
    data = reader.read_cells(args.latency, args.device, spaces.get(args.space).NAME, policy)
    supplied = {"seed": args.seed, "space": args.space}
    predictor = predictors.make_predictor(args.predictor, **predictors.with_defaults(args.predictor, overrides, supplied))
    parts = evaluation.split(len(data.archs), args.train_size, args.val_size, args.seed)
    result = evaluation.evaluate(predictor, data.archs, data.latency_ms, parts)
    metrics = {
        **result.metrics,
        "device": args.device,
        "seed": args.seed,
        "space": args.space,
        "excluded_no_path": data.excluded_invalid,
    }
    print(
        f"leti evaluate: excluded {data.excluded_invalid} cells with no input->output path on {args.device}",
        file=sys.stderr,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(metrics, indent=2) + "\n")
    if args.save:
        predictor.save(args.save)
    print(json.dumps(metrics))
    return 0
