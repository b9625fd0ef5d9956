"""Predictors on cells measured here, beside the noise floor of two passes (``leti.reports.measured``).

    python stages/measured_report.py --section report_nb101 --store data/report_nb101 --output report_nb101

The section (params.yaml) names the space, the device, the network, the sample and the predictors.
The measurement is a resumable campaign per pass; hours for 2000 full-size NB101 cells on 2 cores.
"""

import argparse
import json
from pathlib import Path

from leti import params
from leti.errors import stage_main
from leti.reports import measured as measured_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", default="report_nb101", help="section of the params file (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--store", type=Path, default=Path("data/report_nb101"), help="latency stores of the passes")
    parser.add_argument("--output", type=Path, default=Path("report_nb101"))
    args = parser.parse_args()
    summary = measured_report.run_report(params.section(args.section, args.params), args.params, args.store, args.output)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    stage_main("measured_report", main)
