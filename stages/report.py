"""Stages `report` and `report_latbench`: predictor comparison on published devices (params `<section>`), logged to MLflow.

`python stages/report.py --section report_full --store data/help --output report_full` runs the full
comparison (all 21 devices, 3 seeds), which takes hours on 2 cores; DVC runs the modest sections.
"""

import argparse
import json
from pathlib import Path

from leti import params, tracking
from leti.errors import stage_main
from leti.reports import published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--section", required=True, help="section of the params file")
    parser.add_argument("--store", required=True, help="latency store of the published devices")
    parser.add_argument("--output", required=True, help="report folder to write")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args()
    config = params.section(args.section, args.params)
    out = Path(args.output)
    summary = published.run_report(Path(args.store), config, out)
    if not summary:  # a studies-only part: nothing to log until the parts are merged
        return
    tracking.log_stage_run(
        config.get("experiment", "leti-report"), args.section, {"latency": args.store},
        {"devices": ",".join(config["devices"]), "seeds": config["seeds"], "train_size": config["train_size"]}, summary,
        {out / "report.md": "report", out / "results.csv": "report", out / "summary.json": "report", out / "plots": "report/plots"},
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    stage_main("report", main)
