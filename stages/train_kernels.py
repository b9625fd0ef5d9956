"""Stage `train_kernels@<device>`: a regressor per kernel type for each family of `kernels.train.regressors`,
scored on held-out kernels, logged to MLflow (experiment `<kernels.train.experiment>-kernels-<device>`); the best
becomes `models:/leti-kernels-<device>@champion` when it beats the champion. Reads the kernels measured under the
current campaign's configuration."""

import argparse
import json
import os
from pathlib import Path

from leti import params
from leti.devices.config import device_from_params
from leti.errors import stage_main
from leti.measure import kernels
from leti.store import reader
from leti.tracking import registry
from leti.tracking.kernels import KernelTraining, train_kernels


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a device name under `devices:`")
    parser.add_argument("--kernels", type=Path, required=True, help="the device's kernel table folder")
    parser.add_argument("--rules", type=Path, required=True, help="the device's fusion rules folder")
    parser.add_argument("--models", type=Path, required=True, help="folder for the fitted predictors, one per family")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics file to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    section = params.section("kernels", args.params)
    campaign = kernels.Campaign.from_params(section["campaigns"][section["campaign"]])
    device = device_from_params(args.device, args.params)
    config = kernels.config_id(device, campaign.replication)
    data = reader.read_kernels(args.kernels, section.get("statistic", "min_ms"), configuration=config)
    rules = kernels.rules_from_rows(kernels.read_rule_rows(args.rules, config))
    train = section["train"]
    summary = train_kernels(
        KernelTraining(data=data, rules=rules, regressors=train["regressors"], test_share=float(train["test_share"]),
                       seed=int(train["seed"]), rule=registry.Rule.from_params(train.get("select")),
                       inputs={"kernels": str(args.kernels), "rules": str(args.rules)},
                       experiment=f"{train.get('experiment', 'leti')}-kernels-{device.name}"),
        device.name, args.models,
    )
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (args.models / "mlflow.json").write_text(json.dumps({key: summary[key] for key in ("experiment", "parent_run", "model", "registered",
                                                                                       "champion_version", "reason")}, indent=2) + "\n")
    print(f"train_kernels: {summary['reason']}; {'registered' if summary['registered'] else 'kept'} "
          f"models:/{summary['model']}@champion (v{summary['champion_version']})")


if __name__ == "__main__":
    stage_main("train_kernels", main)
