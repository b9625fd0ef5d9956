"""``leti predict-model``: how fast is this network on that device? Sums its kernels' predictions.

A contract other tools script against: keep its options and its output lines exact.
"""

from __future__ import annotations

import argparse
import json
import sys

from leti.cli.measure_model import shape


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict-model",
        usage="leti predict-model --device NAME MODEL... [--explain]",
        help="predict the latency of any network on a device from its kernel predictors",
        description="Predict each MODEL's latency on DEVICE: the network is split into the kernels the device's runtime "
        "executes (its measured fusion rules) and each kernel is predicted by its type's regressor, from "
        "models:/leti-kernels-DEVICE@champion (the model `make pipeline` registers) or --model. MODEL is what "
        "`leti measure-model` takes: a torchvision builder name, a model-set variant (mobilenet_v2-w0.75-r160) or an "
        '.onnx file. Prints one JSON line per model: {"model", "device", "predicted_ms", "kernels"}; --explain adds '
        "the per-kernel breakdown. A model it cannot read, or one with a kernel type no predictor covers, gets one line "
        "on stderr naming it; the other models are still predicted, and the exit code is 1.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="a torchvision builder name, a model-set variant or an .onnx file")
    parser.add_argument("--device", required=True, metavar="NAME", help="device the latency is for, e.g. onnxruntime-cpu")
    parser.add_argument("--explain", action="store_true", help="add each kernel: type, configuration, ops and predicted ms")
    parser.add_argument("--input-shape", type=shape, metavar="C,H,W", help="input without the batch dim (default: the network's own)")
    parser.add_argument("--model", metavar="URI", help="an MLflow model URI or a folder of saved kernel predictors instead of the champion")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from leti import api

    predictor = api.load_kernel_predictor(args.device, args.model)
    failed = 0
    for spec in args.models:
        try:
            breakdown = predictor.explain(spec, args.input_shape)
        except (ValueError, KeyError, FileNotFoundError) as error:
            message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
            named = message if message.startswith((spec, f"{spec}:")) else f"model {spec}: {message}"
            print(f"leti predict-model: {named}", file=sys.stderr)
            failed += 1
            continue
        line = {"model": spec, "device": args.device, "predicted_ms": round(breakdown.predicted_ms, 6), "kernels": len(breakdown.kernels)}
        if args.explain:
            line["overhead_ms"] = round(breakdown.overhead_ms, 6)
            line["breakdown"] = breakdown.explain()
        print(json.dumps(line), flush=True)
    return 1 if failed else 0
