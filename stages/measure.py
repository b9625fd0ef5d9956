"""Stage `measure`: measure every sampled cell on one device through the Prefect flow; a rerun
resumes where the last one stopped."""

import argparse
import json

from leti import measure_flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", required=True, help="a name under 'devices:' in params.yaml")
    parser.add_argument("--architectures", default="data/architectures.parquet")
    parser.add_argument("--store", default="data/latency")
    args = parser.parse_args()
    result = measure_flow.run_from_params([args.device], "params.yaml", args.architectures, args.store)
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    try:
        main()
    except (KeyError, ValueError, FileNotFoundError) as error:  # bad input: one line naming it
        raise SystemExit(f"measure: error: {error.args[0] if error.args else error}") from None
