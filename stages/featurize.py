"""Stage `featurize`: the flat feature vectors of every sampled cell, as a table."""

import argparse

from leti import features, params, tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architectures", default="data/architectures.parquet")
    parser.add_argument("--output", default="data/features.parquet")
    args = parser.parse_args()
    config = params.section("featurize")
    archs = tables.read(args.architectures, tables.ARCHITECTURES)["arch"].to_list()
    tables.write(features.table(archs, config["feature_sets"]), args.output, tables.FEATURES)


if __name__ == "__main__":
    main()
