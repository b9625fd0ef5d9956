"""Stage `evaluate@<space>`: test-set metrics per predictor (DVC metrics) and plots (DVC plots) of one space.

The same figures per run are in MLflow, logged by the `train@<space>` stage; these files are what
`dvc metrics diff` and `dvc plots diff` compare between commits. The plots' CSV holds a fixed sample
of the test cells (params `evaluate.plot_sample`), enough to see the cloud, small enough for git.
"""

import argparse
import json
from pathlib import Path

import polars as pl

from leti import params, spaces
from leti.errors import stage_main
from leti.metrics import regression_metrics
from leti.reports import plots
from leti.store import tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", required=True)
    parser.add_argument("--predictions", required=True, help="predictions table (stage train@<space>)")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--plots", required=True, help="plots folder to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("evaluate", args.params)
    test = tables.read(args.predictions, tables.PREDICTIONS).filter(pl.col("split") == "test")
    metrics = {}
    for family in test["predictor"].unique(maintain_order=True).to_list():
        rows = test.filter(pl.col("predictor") == family)
        metrics[family] = regression_metrics(rows["measured_ms"].to_numpy(), rows["predicted_ms"].to_numpy())
        metrics[family]["n_test"] = rows.height
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(metrics, indent=2) + "\n")

    out = Path(args.plots)
    out.mkdir(parents=True, exist_ok=True)
    devices = ", ".join(sorted(set(test["device"].to_list())))
    title = f"{spaces.get(args.space).NAME} on {devices}"
    plots.sample_rows(test, config["plot_sample"]).select("arch", "predictor", "measured_ms", "predicted_ms").write_csv(
        out / "test_predictions.csv")
    plots.predicted_vs_measured(test, out / "predicted_vs_measured.png", title)
    plots.error_cdf(test, out / "error_cdf.png", f"relative error, {title}")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    stage_main("evaluate", main)
