"""Stage `sample`: a seeded sample of valid cells with their FLOPs and parameter counts."""

import argparse

import polars as pl
from tqdm import tqdm

from leti import params, tables
from leti.spaces import nb201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="data/architectures.parquet")
    args = parser.parse_args()
    config = params.section("sample")
    if config["space"] != nb201.NAME:
        raise SystemExit(f"sample: unsupported space {config['space']!r} (supported: {nb201.NAME})")
    ids = nb201.canonical_ids()
    network_config = nb201.NetworkConfig()
    example = nb201.example_input(network_config)
    rows = []
    for arch in tqdm(nb201.sample_valid(config["n"], config["seed"]), desc="sample", unit="cell"):
        network = nb201.build_network(arch, network_config)
        cell = nb201.parse(arch)
        rows.append(
            {
                "space": nb201.NAME,
                "arch": arch,
                "canonical_id": ids[nb201.canonical_form(cell)],
                "valid": nb201.has_path(cell),
                "flops": nb201.count_flops(network, example),
                "params": nb201.count_params(network),
            }
        )
    tables.write(pl.DataFrame(rows), args.output, tables.ARCHITECTURES)


if __name__ == "__main__":
    main()
