"""Stage `sample@<space>`: a seeded sample of valid cells of one space (params `sample.<space>`),
with their canonical id and the FLOPs and parameter counts of the benchmark's own network."""

import argparse

import polars as pl
from tqdm import tqdm

from leti import params, spaces
from leti.errors import stage_main
from leti.store import tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", required=True, help="a search space under `sample:`")
    parser.add_argument("--output", required=True, help="architectures table to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    space = spaces.get(args.space)
    config = params.section("sample", args.params)
    if space.NAME not in config:
        raise KeyError(f"{args.params} has no `sample.{space.NAME}` section (n, seed)")
    rows = []
    for arch in tqdm(space.sample_valid(config[space.NAME]["n"], config[space.NAME]["seed"]), desc=f"sample {space.NAME}", unit="cell"):
        flops, parameters = space.flops_params(arch)
        rows.append({"space": space.NAME, "arch": arch, "canonical_id": space.canonical_id(arch), "valid": space.is_valid(arch),
                     "flops": flops, "params": parameters})
    tables.write(pl.DataFrame(rows), args.output, tables.ARCHITECTURES)


if __name__ == "__main__":
    stage_main("sample", main)
