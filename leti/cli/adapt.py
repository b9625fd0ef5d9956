"""``leti adapt``: a new device's predictor from its few measured cells and the pretrained transfer model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "adapt",
        usage="leti adapt --device NEW --latency PATH [--shots-file cells.txt] [--pretrained URI]",
        help="adapt the pretrained transfer model to a new device from its measured cells; register it in MLflow",
        description="Fit the transfer family (leti.predictors.transfer) on NEW's measured cells in PATH (all of them, or "
        "those of --shots-file, e.g. the cells `leti plan-shots` chose), starting from the pretrained model the pipeline "
        "registered (models:/leti-pretrained-SPACE@champion) unless --pretrained names another. The adapted model is "
        "logged as a run of the experiment leti-SPACE-NEW, with its leave-one-out score on the shots as val_* metrics and "
        "tags naming the pretrained model and the shots, and becomes models:/leti-SPACE-NEW@champion when it beats the "
        "champion by the validation rule; then `leti predict --device NEW` answers. From 200 cells on, the trunk is also "
        "fine-tuned (kept only where a tenth of the cells, held out, favour it), and those held-out cells give the "
        "validation score.",
    )
    parser.add_argument("--device", required=True, metavar="NEW")
    parser.add_argument("--latency", type=Path, required=True, metavar="PATH", help="latency store holding NEW's measured cells")
    parser.add_argument("--shots-file", type=Path, metavar="FILE", help="the cells to adapt to, one arch per line (default: every measured cell)")
    parser.add_argument("--pretrained", metavar="URI", help="a pretrained model folder or MLflow model URI (default: the registered champion)")
    parser.add_argument("--space", help="the search space, when NEW has rows of several")
    parser.add_argument("--statistic", default="median_ms", help="which summary of the timed runs (default: %(default)s)")
    parser.add_argument("--config", metavar="ID", help="NEW's measurement configuration, when the store holds several")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from leti import spaces
    from leti.predictors import transfer
    from leti.store import reader
    from leti.tracking import training
    from leti.tracking import transfer as transfer_tracking

    space = spaces.get(transfer.target_space(args.latency, args.device, args.space))
    policy = reader.ReadPolicy(statistic=args.statistic, configuration=args.config or reader.ONLY)
    cells = reader.read_cells(args.latency, args.device, space.NAME, policy)
    shots = cells.archs
    if args.shots_file is not None:
        shots = read_shots(args.shots_file, space, set(cells.archs), args.device)
    folder = transfer_tracking.resolve_pretrained(args.pretrained, space.NAME)
    outcome = training.adapt(cells, shots, folder, args.pretrained or f"models:/{transfer_tracking.registered_name(space.NAME)}@champion",
                             str(args.latency / args.device if (args.latency / args.device).is_dir() else args.latency))
    print(json.dumps(outcome))
    return 0


def read_shots(path: Path, space, measured: set[str], device: str) -> list[str]:  # noqa: ANN001 - a SearchSpace
    """The arch strings of a shots file; a malformed or unmeasured cell is one error naming its line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such shots file")
    shots = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        arch = line.strip()
        if not arch:
            continue
        try:
            arch = space.format_cell(space.parse(arch))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: malformed {space.NAME} cell {line.strip()!r}: {error}") from None
        if arch not in measured:
            raise ValueError(f"{path}:{number}: cell {arch} has no measurement of {device!r} in the store (measure it first)")
        shots.append(arch)
    if len(shots) < 3:
        raise ValueError(f"{path}: {len(shots)} cells; adapting needs at least 3")
    return shots
