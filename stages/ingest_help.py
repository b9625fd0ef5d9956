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
        # A fresh clone has no shared/ folder beside it: fetch the published originals instead.
        print(f"ingest_help: no HELP copy at {source!r}; downloading the originals from {ingest.HELP_URL}", file=sys.stderr)
        source = ingest.HELP_URL
    for result in ingest.ingest_help(source, Path(args.output), config.get("devices") or None):
        print(json.dumps(result.summary()))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # no data, no network, a foreign file: one line
        raise SystemExit(f"ingest_help: error: {error}") from None
