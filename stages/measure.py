"""Stage `measure`: measure every sampled cell on one device through the Prefect flow; a rerun
resumes where the last one stopped."""

import argparse
import json

from leti import measure_flow, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a name under 'devices:' in params.yaml")
    parser.add_argument("--architectures", default="data/architectures.parquet")
    parser.add_argument("--store", default="data/latency")
    args = parser.parse_args()
    config = params.section("measure")
    result = measure_flow.run_measure(
        [args.device],
        measure_flow.architectures(args.architectures),
        runner=config.get("runner", "default"),
        workers=config.get("dask_workers", 2),
        store=args.store,
        chunk_size=config["part_size"],
        retry_errors=config["retry_errors"],
    )
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as error:  # bad input: one line naming it
        raise SystemExit(f"measure: error: {error.args[0] if error.args else error}") from None
