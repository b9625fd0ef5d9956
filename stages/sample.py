"""Stage `sample`: a seeded sample of valid cells with their FLOPs and parameter counts."""

import argparse

import polars as pl
from tqdm import tqdm

from leti import params, tables
from leti.features import costs
from leti.spaces import nb201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="data/architectures.parquet")
    args = parser.parse_args()
    config = params.section("sample")
    if config["space"] != nb201.NAME:
        raise SystemExit(f"sample: unsupported space {config['space']!r} (supported: {nb201.NAME})")
    ids = nb201.canonical_ids()
    rows = []
    for arch in tqdm(nb201.sample_valid(config["n"], config["seed"]), desc="sample", unit="cell"):
        cell = nb201.parse(arch)
        cost = costs.network_cost(arch)
        rows.append(
            {
                "space": nb201.NAME,
                "arch": arch,
                "canonical_id": ids[nb201.canonical_form(cell)],
                "valid": nb201.has_path(cell),
                "flops": cost.flops,
                "params": cost.params,
            }
        )
    tables.write(pl.DataFrame(rows), args.output, tables.ARCHITECTURES)


if __name__ == "__main__":
    main()
