"""Stage `report`: predictor comparison on published HELP devices (params `report`), logged to MLflow.

`python stages/report.py --section report_full --output report_full` runs the full comparison
(all 21 devices, 3 seeds), which takes hours on 2 cores; the default section is the modest one DVC runs.
"""

import argparse
import json
from pathlib import Path

import mlflow

from leti import params, report, tracking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--section", default="report", help="section of the params file (default: %(default)s)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--store", default="data/help")
    parser.add_argument("--output", default="report")
    args = parser.parse_args()
    config = params.section(args.section, args.params)
    out = Path(args.output)
    summary = report.run_report(Path(args.store), config, out)
    if not summary:  # a studies-only part: nothing to log until the parts are merged
        return
    tracking.setup(config.get("experiment", "leti-report"))
    with mlflow.start_run(run_name=args.section, tags=tracking.data_tags({"latency": args.store})):
        mlflow.log_params({"devices": ",".join(config["devices"]), "seeds": str(config["seeds"]), "train_size": config["train_size"]})
        for device, figures in summary.items():
            mlflow.log_metrics({f"{device}.{k}": v for k, v in figures.items() if isinstance(v, float)})
        for name in ("report.md", "results.csv", "summary.json", "plots/predicted_vs_measured.png", "plots/error_cdf.png"):
            mlflow.log_artifact(str(out / name), str(Path("report", name).parent))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
