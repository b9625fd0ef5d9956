"""``leti arch``: check cells of a search space and show what leti knows about them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from leti import spaces
from leti.spaces import nb101  # --matrix/--ops/--specs read the NAS-Bench-101 API's own spec form


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "arch",
        help="validate cells of a search space; print canonical id or hash, FLOPs, params",
        description="Check each cell strictly and print one JSON line per cell, in input order. "
        "NAS-Bench-201 (the default space): a malformed arch string fails with one line quoting it. "
        "NAS-Bench-101: give cells as arch strings, as one --matrix/--ops spec, or as a --specs file "
        "of the NAS-Bench-101 API's JSON lines; each prints arch, hash (the benchmark's own, to join "
        "with published data), valid, flops and params. A cell that is malformed or invalid after "
        "pruning prints {\"valid\": false, \"error\": ...}; the others go on and the exit code is 1.",
        epilog="examples:\n"
        "  leti arch '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|'\n"
        "  leti arch --space nb101 --matrix '[[0,1,1],[0,0,1],[0,0,0]]' --ops input,conv3x3-bn-relu,output\n"
        "  leti arch --space nb101 --specs specs.jsonl   # lines of {\"matrix\": [[...]], \"ops\": [...]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("archs", nargs="*", metavar="ARCH", help="arch strings of the space, e.g. NB201 "
                        "'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|' or NB101 '1333m|111010.00001.0001.100.01.1'")
    parser.add_argument("--space", default=spaces.DEFAULT, metavar="NAME",
                        help=f"search space: {', '.join(sorted(spaces.SPACES))} (default: {spaces.DEFAULT})")
    parser.add_argument("--matrix", metavar="JSON", help="nb101: adjacency matrix of one cell, e.g. '[[0,1],[0,0]]'")
    parser.add_argument("--ops", metavar="LIST", help="nb101: comma-separated op of each vertex, e.g. input,maxpool3x3,output")
    parser.add_argument("--specs", metavar="FILE", help="nb101: JSON lines {\"matrix\": [[...]], \"ops\": [...]}; '-' reads stdin")
    parser.add_argument("--no-network", action="store_true", help="skip FLOPs and params")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    space = spaces.get(args.space)
    if space is nb101:
        return _run_nb101(args)
    if args.matrix or args.ops or args.specs:
        raise ValueError(f"--matrix, --ops and --specs read NAS-Bench-101 specs; add --space nb101 (not {space.NAME})")
    if not args.archs:
        raise ValueError("give at least one ARCH string")
    for arch in args.archs:
        info = space.describe(arch)
        if not args.no_network:
            info["flops"], info["params"] = space.flops_params(arch)
        print(json.dumps(info))
    return 0


def _run_nb101(args: argparse.Namespace) -> int:
    sources = [bool(args.archs), args.matrix is not None or args.ops is not None, args.specs is not None]
    if sum(sources) != 1:
        raise ValueError("give NB101 cells one way: ARCH strings, --matrix with --ops, or --specs FILE")
    if sources[1] and (args.matrix is None or args.ops is None):
        raise ValueError("--matrix and --ops go together: give both")
    all_valid = True
    for read in _nb101_cells(args):
        try:
            info = read()
        except nb101.ArchStringError as error:
            all_valid = False
            print(json.dumps({"valid": False, "error": str(error)}), flush=True)
            continue
        if not args.no_network:
            info["flops"], info["params"] = nb101.flops_params(info["arch"])
        print(json.dumps(info), flush=True)
    return 0 if all_valid else 1


def _nb101_cells(args: argparse.Namespace) -> Iterator:
    """One callable per cell, in input order; calling it describes the cell or raises ArchStringError."""
    if args.archs:
        for arch in args.archs:
            yield lambda arch=arch: nb101.describe(arch)
    elif args.specs is None:
        yield lambda: nb101.describe_spec(_json(args.matrix, "--matrix"), [op.strip() for op in args.ops.split(",")])
    else:
        for where, text in _lines(args.specs):
            yield lambda where=where, text=text: _spec_line(where, text)


def _lines(path: str) -> Iterator[tuple[str, str]]:
    """(``FILE:LINE``, text) of each non-blank line."""
    if path != "-" and not Path(path).is_file():
        raise FileNotFoundError(f"specs file {path} does not exist")
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        for number, text in enumerate(stream, start=1):
            if text.strip():
                yield f"{'stdin' if path == '-' else path}:{number}", text


def _spec_line(where: str, text: str) -> dict[str, object]:
    spec = _json(text, where)
    if not isinstance(spec, dict) or not {"matrix", "ops"} <= spec.keys():
        raise nb101.ArchStringError(f"{where}: expected an object with \"matrix\" and \"ops\", got {text.strip()!r}")
    try:
        return nb101.describe_spec(spec["matrix"], spec["ops"])
    except nb101.ArchStringError as error:
        raise type(error)(f"{where}: {error}") from None


def _json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise nb101.ArchStringError(f"{where}: not JSON ({error.msg} at column {error.colno}): {text.strip()!r}") from None
