"""Stages `ingest_help` and `ingest_latbench`: import published latencies (params `ingest_<kind>`) into a store.

    python stages/ingest.py help --output data/help          # HELP (Lee et al. 2021), 21 devices
    python stages/ingest.py latbench --output data/latbench  # LatBench (BRP-NAS, Dudziak et al. 2020)
"""

import argparse
import json
import sys
from pathlib import Path

from leti import params
from leti.errors import stage_main
from leti.store import ingest


def source_of(kind: str, config: dict) -> str:
    """The configured source, or for HELP the published originals when no local copy is there."""
    source = config["source"]
    if source.startswith(("http://", "https://")) or Path(source).exists():
        return source
    if kind == "help":  # a fresh clone has no shared/ folder beside it: fetch the published originals
        print(f"ingest_help: no HELP copy at {source!r}; downloading the originals from {ingest.HELP_URL}", file=sys.stderr)
        return ingest.HELP_URL
    raise FileNotFoundError(
        f"no LatBench copy at {source!r}: set ingest_latbench.source in params.yaml to a folder of the released "
        "pickles (SamsungLabs/eagle's README links them) or to their URLs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["help", "latbench"])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    config = params.section(f"ingest_{args.kind}", args.params)
    source = source_of(args.kind, config)
    if args.kind == "help":
        results = ingest.ingest_help(source, args.output, config.get("devices") or None)
    else:
        sources = [source] if not config.get("devices") else [f"{source.rstrip('/')}/{d}.pickle" for d in config["devices"]]
        results = ingest.ingest_latbench(sources, args.output)
    for result in results:
        print(json.dumps(result.summary()))


if __name__ == "__main__":
    stage_main("ingest", main)
