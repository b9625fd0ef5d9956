"""Stage `featurize@<space>`: the flat feature vectors and the GCN's cell graphs of one space's sampled
cells, as tables (params `featurize`) to share and inspect. Predictors featurize the cells they are
asked about themselves, from the same code, so a model trains and serves on identical features."""

import argparse

from leti import features, params, spaces
from leti.errors import stage_main
from leti.features import graph
from leti.store import tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--space", required=True)
    parser.add_argument("--architectures", required=True, help="architectures table (stage sample@<space>)")
    parser.add_argument("--output", required=True, help="features table to write")
    parser.add_argument("--graphs", required=True, help="graphs table to write")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section("featurize", args.params)
    space = spaces.get(args.space).NAME
    architectures = tables.read(args.architectures, tables.ARCHITECTURES)
    others = sorted(set(architectures["space"].to_list()) - {space})
    if others:
        raise ValueError(f"{args.architectures} holds {', '.join(others)} cells, not {space}")
    archs = architectures["arch"].to_list()
    tables.write(features.table(archs, config["feature_sets"], space), args.output, tables.FEATURES)
    tables.write(graph.graph_table(archs, space), args.graphs, tables.GRAPHS)


if __name__ == "__main__":
    stage_main("featurize", main)
