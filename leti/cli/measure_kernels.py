"""``leti measure-kernels``: a device's fusion rules and kernel campaign (see ``leti.measure.kernels``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leti import params
from leti.devices.config import device_from_params
from leti.measure import kernels


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-kernels",
        help="detect a device's fusion rules and time sampled kernels; feeds its kernel predictors",
        description="Test which adjacent ops the device's runtime fuses (each pair against its parts), then time "
        "configurations of every kernel type its rules give, each as a one-kernel model with the device's protocol, "
        "and add configurations where the regressor errs most. Rows are appended to KERNELS/DEVICE/ and RULES/DEVICE/; "
        "a rerun measures only what is missing. The campaign's size is kernels.campaigns.NAME of the params file.",
        epilog="Example: leti measure-kernels --device onnxruntime-cpu --campaign full",
    )
    parser.add_argument("--device", required=True, help="a device name under 'devices:' in the params file")
    parser.add_argument("--campaign", help="an entry of kernels.campaigns (default: kernels.campaign)")
    parser.add_argument("--kernels", type=Path, default=Path("data/kernel_latency"), help="kernel table folder (default: %(default)s)")
    parser.add_argument("--rules", type=Path, default=Path("data/fusion_rules"), help="fusion rules folder (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    device = device_from_params(args.device, args.params)
    section = params.section("kernels", args.params)
    name = args.campaign or section["campaign"]
    campaigns = section.get("campaigns") or {}
    if name not in campaigns:
        raise KeyError(f"unknown kernel campaign {name!r} (kernels.campaigns in {args.params}: {', '.join(campaigns) or 'none'})")
    summary = kernels.run_campaign(device, args.kernels, args.rules, kernels.Campaign.from_params(campaigns[name]),
                                   lambda line: print(json.dumps({"note": line}), flush=True))
    print(json.dumps({**summary, "campaign": name}))
    return 1 if summary["failed"] else 0
