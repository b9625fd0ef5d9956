"""``leti measure``: a resumable measurement campaign on one device from params.yaml."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from leti import params, spaces
from leti.devices.config import device_from_params
from leti.measure import campaign
from leti.store import tables


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure",
        help="measure cells on a device; appends to a latency store and resumes after a stop",
        description="Measure cells of a search space on a device configured under 'devices:' in params.yaml, "
        "each in the network measure.networks.SPACE describes. Results are appended as Parquet parts under "
        "STORE/DEVICE/SPACE/; cells already measured with the same configuration are skipped, so rerunning "
        "after a crash continues where it stopped.",
    )
    parser.add_argument("--device", required=True, help="a device name under 'devices:' in the params file")
    parser.add_argument("--space", default=spaces.DEFAULT, metavar="NAME",
                        help=f"search space of the cells: {', '.join(sorted(spaces.SPACES))} (default: %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--arch", action="append", metavar="ARCH", help="an arch string (repeatable)")
    source.add_argument("--architectures", type=Path, help="an architectures table (Parquet), e.g. data/architectures.parquet")
    source.add_argument("--cells", type=Path, metavar="FILE", help="a text file of arch strings, one per line "
                        "(what `leti plan-shots` writes)")
    parser.add_argument("--store", type=Path, default=Path("data/latency"), help="latency store folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--part-size", type=int, help="cells per Parquet part and sentinel chunk (default: measure.part_size)")
    parser.add_argument("--retry-errors", action="store_true", help="measure again cells whose last attempt failed")
    parser.add_argument("--no-sentinel", action="store_true", help="time no sentinel around the chunks (measure.sentinel "
                        "sets its threshold and attempts)")
    parser.add_argument("--retries", type=int, default=3, help="device retries before giving up (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=2.0, help="first retry delay in s, doubled each time (default: %(default)s)")
    parser.add_argument("--op-profiles", type=Path, default=None,
                        help="where per-operator profiles go when the device profiles operators "
                        "(default: op_profiles beside STORE, e.g. data/op_profiles)")
    parser.add_argument("--no-prepare-ahead", action="store_true",
                        help="convert each cell just before timing it instead of in a worker process ahead of the device")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def cells_file(path: Path, space: spaces.SearchSpace) -> list[str]:
    """The cells of a text file, one arch string per line (blank lines and ``#`` comments skipped); a
    malformed line is named by its file and line number."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cells file")
    archs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                archs.append(space.format_cell(space.parse(line.strip())))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: {error}") from None
    if not archs:
        raise ValueError(f"{path}: no cells in it")
    return archs


def run(args: argparse.Namespace) -> int:
    space = spaces.get(args.space)
    device = device_from_params(args.device, args.params, space.NAME)
    if args.cells:
        archs = cells_file(args.cells, space)
    elif args.arch:
        archs = [space.format_cell(space.parse(arch)) for arch in args.arch]
    else:
        table = tables.read(args.architectures, tables.ARCHITECTURES)
        others = sorted(set(table["space"].to_list()) - {space.NAME})
        if others:
            raise ValueError(f"{args.architectures} holds {', '.join(others)} cells, not {space.NAME} (use --space)")
        archs = table["arch"].to_list()
    options = campaign.options_from_params(params.load(args.params).get("measure") or {})
    if args.part_size is not None:
        options["part_size"] = args.part_size
    if args.no_sentinel:
        options["policy"] = dataclasses.replace(options["policy"], enabled=False)
    options["retry_errors"] = options["retry_errors"] or args.retry_errors
    result = campaign.run_campaign(
        archs, device, args.store, progress=not args.no_progress, retries=args.retries, backoff_seconds=args.backoff,
        prepare_ahead=not args.no_prepare_ahead, op_profile_store=args.op_profiles, **options,
    )
    print(f"leti measure: {device.name}: {result.quality().line()}", file=sys.stderr)
    print(json.dumps(result.summary()))
    return 0
