"""Stage `measure`: measure every sampled cell on one device, resuming where the last run stopped."""

import argparse
import json

from leti import campaign, params, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a name under 'devices:' in params.yaml")
    parser.add_argument("--architectures", default="data/architectures.parquet")
    parser.add_argument("--store", default="data/latency")
    args = parser.parse_args()
    config = params.section("measure")
    device = params.device(args.device)
    archs = tables.read(args.architectures, tables.ARCHITECTURES)["arch"].to_list()
    result = campaign.run_campaign(
        archs, device, args.store, part_size=config["part_size"], retry_errors=config["retry_errors"]
    )
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
