"""Merge the parts of the HELP comparison (``benchmarks/help_report.yaml``) into one report.

    python benchmarks/help_report.py merge --parts report_parts --store data/help --output report_parts/merged

Each part is a ``stages/report.py`` output folder; rows present in several parts (same device, seed,
study, setting and predictor) are taken from the first part listed in the YAML file; a part with
``auto: false`` contributes no ``auto`` rows.
"""

import argparse
from pathlib import Path

import polars as pl
import yaml

from leti.reports import published as report
from leti.store import reader

KEYS = ["device", "seed", "study", "setting", "predictor"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["merge"])
    parser.add_argument("--config", default="benchmarks/help_report.yaml")
    parser.add_argument("--parts", default="report_parts")
    parser.add_argument("--store", default="data/help")
    parser.add_argument("--output", default="report_parts/merged")
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    parts = [name for name, section in config.items() if isinstance(section, dict) and "seeds" in section]  # not anchors
    frames = [
        pl.read_csv(Path(args.parts) / name / "results.csv", schema_overrides={"setting": pl.String})
        .filter(pl.lit(config[name].get("auto", True)) | (pl.col("predictor") != "auto"))
        for name in parts
        if (Path(args.parts) / name / "results.csv").exists()
    ]
    results = pl.concat(frames, how="vertical_relaxed").unique(subset=KEYS, keep="first", maintain_order=True)
    results = results.with_columns(pl.col("setting").fill_null(""))
    devices = results["device"].unique(maintain_order=True).to_list()
    excluded, resolution, oracle = {}, {}, {}
    for device in devices:
        data = reader.read_cells(Path(args.store), device, "nb201", reader.ReadPolicy(duplicates="mean"))
        excluded[device], resolution[device], oracle[device] = (
            data.excluded_invalid, report.rounding_share(data), report.op_count_oracle(data)
        )
    first = config[parts[0]]
    merged = {
        **first,
        "seeds": sorted(results["seed"].unique().to_list()),
    }
    text, summary = report.markdown(results, merged, excluded, resolution, oracle)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results.write_csv(out / "results.csv")
    (out / "report.md").write_text(text)
    (out / "summary.json").write_text(report.summary_json(summary))
    print(text)


if __name__ == "__main__":
    main()
