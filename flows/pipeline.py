"""Command line of the Prefect pipeline flow (``leti.orchestration.pipeline``): the DVC pipeline, one task per
stage. Also the entry point of the deployments in prefect.yaml.

    python flows/pipeline.py                                   # like `dvc repro`, as a Prefect flow run
    python flows/pipeline.py --target evaluate                 # the stages `dvc repro evaluate` needs
    python flows/pipeline.py --set-param train.seed=1 --name seed-1    # a DVC experiment (`dvc exp show`)
"""

import argparse
import json
from pathlib import Path

from dvc.exceptions import DvcException

from leti.errors import stage_main
from leti.orchestration.pipeline import StageFailed, check_arguments, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", action="append", help="a stage to bring up to date with its upstream stages (repeatable; default: all)")
    parser.add_argument("-S", "--set-param", action="append", default=[], metavar="[FILE:]KEY=VALUE",
                        help="change a param first, as `dvc exp run --set-param` (repeatable); the run becomes a DVC experiment")
    parser.add_argument("-n", "--name", help="save the run as a DVC experiment of this name")
    parser.add_argument("--push", action="store_true", help="`dvc push` the stages' outputs to the default remote afterwards")
    parser.add_argument("--retries", type=int, default=2, help="retries of a stage whose device dropped out (default: %(default)s)")
    parser.add_argument("--retry-delay", type=float, default=30.0, help="seconds before such a retry (default: %(default)s)")
    args = parser.parse_args()
    check_arguments(Path.cwd(), args.target, args.set_param)
    result = pipeline(targets=args.target, set_params=args.set_param, experiment=args.name, push=args.push,
                      retries=args.retries, retry_delay_seconds=args.retry_delay)
    print(json.dumps({"stages": result["stages"], "experiment": result["experiment"]}, indent=2))


if __name__ == "__main__":
    stage_main("pipeline", main, also=(StageFailed, DvcException))  # a stage's own output is in the log above
