"""Stage `featurize@<space>`: the flat feature vectors and the GCN's cell graphs of one space's sampled cells, as tables."""

import argparse

from leti import features, params, spaces, tables
from leti.features import graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", default=spaces.DEFAULT)
    parser.add_argument("--architectures", default="data/architectures/nb201.parquet")
    parser.add_argument("--output", default="data/features/nb201.parquet")
    parser.add_argument("--graphs", default="data/graphs/nb201.parquet")
    args = parser.parse_args()
    config = params.section("featurize")
    space = spaces.get(args.space).NAME
    architectures = tables.read(args.architectures, tables.ARCHITECTURES)
    others = sorted(set(architectures["space"].to_list()) - {space})
    if others:
        raise SystemExit(f"featurize: {args.architectures} holds {', '.join(others)} cells, not {space}")
    archs = architectures["arch"].to_list()
    tables.write(features.table(archs, config["feature_sets"], space), args.output, tables.FEATURES)
    tables.write(graph.graph_table(archs, space), args.graphs, tables.GRAPHS)


if __name__ == "__main__":
    main()
