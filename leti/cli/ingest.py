"""``leti ingest``: import published latency data (HELP's or LatBench's release, or any table) into a latency store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leti.store import ingest


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ingest",
        help="import published latencies (HELP, LatBench, any table) into a latency store",
        description="Import published latencies into a latency store DIR (DIR/<device>/part-*.parquet). "
        "Parts are content-hashed: ingesting the same source again changes nothing, another device is added "
        "beside the others. Bad rows are listed with their row numbers on stderr.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    help_parser = kinds.add_parser("help", help="HELP's NAS-Bench-201 release (str_arch2idx.pt + latency/<device>.pt)")
    help_parser.add_argument("location", metavar="PATH_OR_URL", help=f"a HELP folder, or a URL such as {ingest.HELP_URL}")
    help_parser.add_argument("--device", action="append", help="import only this device (repeatable; default: all)")
    help_parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="latency store folder")
    help_parser.set_defaults(handler=run)

    latbench = kinds.add_parser(
        "latbench",
        help="LatBench's release (BRP-NAS): one pickle per device, {op-index vector: seconds}",
        description="Import LatBench pickles (SamsungLabs/eagle's release). Each pickle is one device, named "
        "after its file (desktop-gpu-gtx-1080ti-fp32.pickle -> desktop-gpu-gtx-1080ti-fp32) unless --device is "
        "given; latencies are stored in milliseconds.",
    )
    latbench.add_argument("paths", nargs="+", metavar="PATH", help="a released pickle, a folder of them, or a URL of one")
    latbench.add_argument("--device", help="device name for a single pickle (default: its file name)")
    latbench.add_argument("--output", type=Path, required=True, metavar="DIR", help="latency store folder")
    latbench.set_defaults(handler=run)

    table = kinds.add_parser("table", help="a CSV or Parquet table of arch strings and latencies")
    table.add_argument("file", type=Path, metavar="FILE")
    table.add_argument("--space", default="nb201", help="search space (default: %(default)s)")
    table.add_argument("--device", required=True, help="device name to store the rows under")
    table.add_argument("--arch-column", required=True, metavar="COL")
    table.add_argument("--latency-column", required=True, metavar="COL")
    table.add_argument("--unit", choices=sorted(ingest.UNITS_TO_MS), default="ms")
    table.add_argument("--output", type=Path, required=True, metavar="DIR", help="latency store folder")
    table.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.kind == "help":
        results = ingest.ingest_help(args.location, args.output, args.device)
    elif args.kind == "latbench":
        results = ingest.ingest_latbench(args.paths, args.output, args.device)
    else:
        results = [
            ingest.ingest_table(
                args.file, args.space, args.device, args.arch_column, args.latency_column, args.unit, args.output
            )
        ]
    for result in results:
        for bad in result.bad_rows:
            print(f"leti ingest: {result.source} device {result.device}: bad row {bad.row}: {bad.reason}", file=sys.stderr)
        print(json.dumps(result.summary()))
    return 1 if any(result.bad_rows for result in results) else 0
