"""Stage `ingest_help`: import the published HELP latencies (params `ingest_help`) into a latency store."""

import argparse
import json
import sys
from pathlib import Path

from leti import ingest, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="data/help")
    args = parser.parse_args()
    config = params.section("ingest_help")
    source = config["source"]
    if not source.startswith(("http://", "https://")) and not Path(source).exists():
        sys.exit(
            f"ingest_help: HELP data not found at {source!r}; set ingest_help.source in params.yaml to a HELP "
            f"folder or to {ingest.HELP_URL}"
        )
    for result in ingest.ingest_help(source, Path(args.output), config.get("devices") or None):
        print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
