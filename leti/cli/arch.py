"""``leti arch``: check NAS-Bench-201 arch strings and show what leti knows about them."""

from __future__ import annotations

import argparse
import json

from leti.spaces import nb201


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "arch",
        help="validate NAS-Bench-201 arch strings; print canonical class, path, FLOPs, params",
        description="Parse each arch string strictly and print one JSON line per cell. "
        "A malformed string fails with a message that quotes it.",
    )
    parser.add_argument("archs", nargs="+", metavar="ARCH", help="e.g. '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|'")
    parser.add_argument("--no-network", action="store_true", help="skip building the network (no FLOPs/params)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = nb201.NetworkConfig()
    for arch in args.archs:
        cell = nb201.parse(arch)
        info = {
            "arch": nb201.format_cell(cell),
            "has_path": nb201.has_path(cell),
            "canonical_id": nb201.canonical_ids()[nb201.canonical_form(cell)],
            "canonical_form": nb201.canonical_form(cell),
        }
        if not args.no_network:
            network = nb201.build_network(arch, config)
            info["flops"] = nb201.count_flops(network, nb201.example_input(config))
            info["params"] = nb201.count_params(network)
        print(json.dumps(info))
    return 0
