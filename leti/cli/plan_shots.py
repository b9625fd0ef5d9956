"""``leti plan-shots``: which cells a new device should measure, chosen from the pretrained transfer model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan-shots",
        help="choose the K cells a new device should measure for few-shot transfer",
        description="Write K cells of SPACE, one arch per line, that cover the pretrained transfer model's embedding "
        "(k-means centres below 10 shots, farthest points from 10 on), so that adapting to a new device from their "
        "latencies works best. Measure them with `leti measure --device NEW --cells FILE`, then `leti adapt --device "
        "NEW --latency STORE --shots-file FILE`.",
    )
    parser.add_argument("--space", required=True, help="the search space of the cells, e.g. nb201")
    parser.add_argument("--shots", type=int, required=True, metavar="K")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="cells to measure, one arch per line")
    parser.add_argument("--pretrained", metavar="URI", help="the pretrained model: a folder, or an MLflow model URI "
                        "(default: models:/leti-pretrained-SPACE@champion, which `make pipeline` registers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--design", default="auto", help="auto (default), kmeans, fps or random")
    parser.add_argument("--candidates", type=int, default=20000,
                        help="cells drawn from the space to choose among, for a space too large to embed whole (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from leti import spaces
    from leti.predictors import transfer
    from leti.tracking import transfer as transfer_tracking

    space = spaces.get(args.space)
    pretrained = transfer.Pretrained.load(transfer_tracking.resolve_pretrained(args.pretrained, space.NAME))
    if pretrained.space != space.NAME:
        raise ValueError(f"the pretrained model learned {pretrained.space} cells, not {space.NAME}")
    candidates = space.sample_valid(min(args.candidates, space.VALID_CELLS), seed=args.seed)
    chosen = transfer.design_shots(pretrained.embed(candidates), args.shots, args.seed, args.design)
    cells = [candidates[i] for i in chosen]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(cells) + "\n")
    print(json.dumps({"space": space.NAME, "shots": len(cells), "design": args.design, "output": str(args.output),
                      "pretrained": pretrained.data}))
    return 0
