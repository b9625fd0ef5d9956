"""Stage `measure_kernels@<device>`: the device's fusion rules and kernel campaign (params `kernels.campaign`,
`kernels.campaigns`, `measure.defaults`, `devices.<device>`), appended to the rules and kernel tables. Resumes."""

import argparse
import json
from pathlib import Path

from leti import params
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.measure import kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a device name under `devices:`")
    parser.add_argument("--kernels", type=Path, required=True, help="kernel table folder (one folder per device)")
    parser.add_argument("--rules", type=Path, required=True, help="fusion rules folder (one folder per device)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    section = params.section("kernels", args.params)
    chosen = section["campaign"]
    if chosen not in (section.get("campaigns") or {}):
        raise KeyError(f"kernels.campaign {chosen!r} is not under kernels.campaigns ({', '.join(section.get('campaigns') or {})})")
    campaign = kernels.Campaign.from_params(section["campaigns"][chosen])
    device = device_from_params(args.device, args.params)
    summary = kernels.run_campaign(device, args.kernels, args.rules, campaign, print)
    print(json.dumps({**summary, "campaign": chosen}))


if __name__ == "__main__":
    stage_main("measure_kernels", main)
