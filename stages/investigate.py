"""Stage `investigate`: the investigation report over every store (params `investigate`), logged to MLflow.

Reads leti's measured cells, the published HELP and LatBench imports, the popular networks, the
per-op lookups, the op profiles and the devices' kernel predictors; writes investigation/report.md, its figures, CSV tables,
summary.json (DVC metrics) and plots/ (DVC plots).
"""

import argparse
import json
from pathlib import Path

from leti import params, tracking
from leti.errors import stage_main
from leti.reports import investigation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=Path, nargs="+", required=True,
                        help="latency stores holding the space's cells (leti's own and published)")
    parser.add_argument("--models", type=Path, required=True, help="the named networks' latency store")
    parser.add_argument("--op-latency", type=Path, required=True, help="per-op lookup tables (stage measure_ops)")
    parser.add_argument("--op-profiles", type=Path, nargs="*", default=[], help="op-profile folders (missing ones are skipped)")
    parser.add_argument("--kernel-models", type=Path, required=True, help="kernel predictors, one folder per device (stage train_kernels)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("investigate", args.params)
    missing = [str(path) for path in args.cells if not path.is_dir()]
    if missing:
        raise FileNotFoundError(f"no latency store at {', '.join(missing)} (run the stages that write them: dvc repro)")
    metrics = investigation.investigate(args.cells, args.models, args.op_latency, args.op_profiles, config, args.output,
                                        kernel_models=args.kernel_models)
    inputs = {path.name: str(path) for path in [*args.cells, args.models, args.op_latency, *args.op_profiles, args.kernel_models]
              if path.exists()}
    tracking.log_stage_run(config.get("experiment", "leti-investigation"), "investigate", inputs,
                           {key: value for key, value in config.items() if key != "experiment"}, metrics, {args.output: "investigation"})
    print(json.dumps({"devices": metrics["devices"], "clusters": metrics["clusters"], "report": str(args.output / "report.md")}))


if __name__ == "__main__":
    stage_main("investigate", main)
