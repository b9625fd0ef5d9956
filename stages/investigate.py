"""Stage `investigate`: the investigation report over every store (params `investigate`), logged to MLflow.

Reads leti's measured cells (data/latency), the published HELP and LatBench imports, the popular
networks (data/model_latency), the per-op lookups (data/op_latency) and the op profiles; writes
investigation/report.md, its figures, CSV tables, summary.json (DVC metrics) and plots/ (DVC plots).
"""

import argparse
import json
from pathlib import Path

import mlflow

from leti import investigation, params, tracking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=Path, nargs="+", default=[Path("data/latency"), Path("data/help"), Path("data/latbench")],
                        help="latency stores holding NAS-Bench-201 cells (leti's own and published)")
    parser.add_argument("--models", type=Path, default=Path("data/model_latency"), help="the named networks' latency store")
    parser.add_argument("--op-latency", type=Path, default=Path("data/op_latency"), help="per-op lookup tables (measure_ops)")
    parser.add_argument("--op-profiles", type=Path, nargs="*", default=[Path("data/model_op_profiles"), Path("data/op_profiles")],
                        help="op-profile folders (missing ones are skipped)")
    parser.add_argument("--output", type=Path, default=Path("investigation"))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("investigate", args.params)
    missing = [str(path) for path in args.cells if not path.is_dir()]
    if missing:
        raise FileNotFoundError(f"no latency store at {', '.join(missing)} (run the stages that write them: dvc repro)")
    metrics = investigation.investigate(args.cells, args.models, args.op_latency, args.op_profiles, config, args.output)
    inputs = {path.name: str(path) for path in [*args.cells, args.models, args.op_latency, *args.op_profiles] if path.exists()}
    tracking.setup(config.get("experiment", "leti-investigation"))
    with mlflow.start_run(run_name="investigate", tags=tracking.data_tags(inputs)):
        mlflow.log_params({key: value for key, value in config.items() if key != "experiment"})
        mlflow.log_metrics(flatten(metrics))
        mlflow.log_artifacts(str(args.output), "investigation")
    print(json.dumps({"devices": metrics["devices"], "clusters": metrics["clusters"], "report": str(args.output / "report.md")}))


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow keys (``flops_spearman.gold_6240``); MLflow allows letters, digits, ``_-./`` and spaces."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}".replace("@", "_")
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)):
            flat[name] = float(value)
    return flat


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError) as error:  # missing data or params: one line, not a traceback
        raise SystemExit(f"investigate: error: {error.args[0] if isinstance(error, KeyError) else error}") from None
