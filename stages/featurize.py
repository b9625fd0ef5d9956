"""Stage `featurize`: the flat feature vectors and the GCN's cell graphs of every sampled cell, as tables."""

import argparse

import polars as pl

from leti import features, params, tables
from leti.features import graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", default="data/architectures.parquet")
    parser.add_argument("--output", default="data/features.parquet")
    parser.add_argument("--graphs", default="data/graphs.parquet")
    args = parser.parse_args()
    config = params.section("featurize")
    architectures = tables.read(args.architectures, tables.ARCHITECTURES)
    archs = architectures["arch"].to_list()
    tables.write(features.table(archs, config["feature_sets"]), args.output, tables.FEATURES)
    by_space = architectures.group_by("space", maintain_order=True)
    graphs = [graph.graph_table(group["arch"].to_list(), space) for (space,), group in by_space]
    tables.write(pl.concat(graphs), args.graphs, tables.GRAPHS)


if __name__ == "__main__":
    main()
