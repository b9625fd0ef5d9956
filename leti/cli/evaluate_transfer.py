"""``leti evaluate-transfer``: a new device from K measurements, scored on the rest of its cells.

A contract other tools script against: keep its options and its JSON keys exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leti.cli.evaluate import parse_overrides


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate-transfer",
        help="pretrain on source devices, adapt to a target from K of its cells, score the rest",
        usage="leti evaluate-transfer --latency PATH --source-devices A,B,... --target-device T --shots K --seed S --output FILE",
        description="Pretrain the transfer model (leti.predictors.transfer) on the source devices' cells in PATH, "
        "never on the target's; choose K of the target's cells (a design from the pretrained model, seeded by S), adapt "
        "to them, and score every other valid cell of the target. Writes `leti evaluate`'s keys (acc_1pct, acc_5pct, "
        "acc_10pct, rmse_ms, mape, spearman, kendall, n_train, n_val, n_test, fit_seconds, predict_seconds, predictor) "
        "plus shots, spearman_all (every cell, the shots included: NASFLAT's rule), the ridge baseline's figures "
        "(ridge_*), pretrain_seconds and whether the pretrained model came from the cache (pretraining on the same "
        "sources is cached, keyed by the data's digest). The space is the target's (its rows in PATH).",
    )
    parser.add_argument("--latency", type=Path, required=True, metavar="PATH", help="one latency store holding the sources and the target")
    parser.add_argument("--source-devices", required=True, metavar="A,B,...", help="comma-separated source devices")
    parser.add_argument("--target-device", required=True, metavar="T")
    parser.add_argument("--shots", type=int, required=True, metavar="K", help="measured cells of the target the model adapts to")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="metrics JSON file")
    parser.add_argument("--space", help="the search space, when the target has rows of several")
    parser.add_argument("--design", default="auto", help="how the shots are chosen: auto (default), kmeans, fps, random")
    parser.add_argument("--statistic", default="median_ms", help="which summary of leti's own timed runs (default: %(default)s)")
    parser.add_argument("--cache", type=Path, help="pretrained models by data digest (default: $LETI_CACHE_DIR/transfer)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pretraining setting, e.g. --set epochs=20")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from leti.predictors import transfer
    from leti.store import reader

    sources = [name.strip() for name in args.source_devices.split(",") if name.strip()]
    if not sources:
        raise ValueError("--source-devices names no device")
    if args.target_device in sources:
        raise ValueError(f"target device {args.target_device!r} is also a source: its cells would be seen in pretraining")
    overrides = parse_overrides(args.set)
    config = transfer.PretrainConfig.from_params(overrides)
    space = transfer.target_space(args.latency, args.target_device, args.space)
    policy = reader.ReadPolicy(statistic=args.statistic, configuration=reader.NEWEST)
    target = reader.read_cells(args.latency, args.target_device, space, policy)
    if args.shots > len(target.archs) - 2:
        raise ValueError(f"--shots {args.shots}: target {args.target_device!r} has {len(target.archs)} valid {space} cells, "
                         "too few to leave 2 to score")
    matrix = transfer.source_matrix(args.latency, sources, space, policy)
    pretrained, hit = transfer.cached(args.cache or transfer.default_cache(), space, matrix.archs, matrix.latency_ms,
                                      matrix.devices, config)
    metrics = transfer.evaluate(pretrained, target.archs, target.latency_ms, args.shots, args.seed, args.design)
    ridge = transfer.ridge_scores(pretrained, matrix, target.archs, target.latency_ms, metrics["shot_archs"])
    metrics = {
        **{key: value for key, value in metrics.items() if key != "shot_archs"}, **ridge,
        "pretrain_seconds": pretrained.train_seconds, "pretrain_cached": hit, "pretrained": pretrained.data,
        "sources": sources, "target": args.target_device, "seed": args.seed, "space": space,
        "excluded_no_path": target.excluded_invalid,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"leti evaluate-transfer: {args.target_device} from {args.shots} shots, pretrained on {len(sources)} devices "
          f"({'cached' if hit else f'{pretrained.train_seconds:.0f} s'})", file=sys.stderr)
    print(json.dumps(metrics))
    return 0
