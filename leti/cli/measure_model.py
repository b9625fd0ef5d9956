"""``leti measure-model``: time named networks (torchvision classifiers, ONNX or .tflite files) on a device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leti import networks
from leti.devices.config import device_from_params
from leti.measure import named_models


def shape(text: str) -> tuple[int, ...]:
    """``3,224,224`` -> (3, 224, 224)."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape such as 3,224,224") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape such as 3,224,224")
    return dims


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "measure-model",
        help="measure named networks (torchvision classifiers, ONNX or .tflite files) on a device",
        description="Time networks that are not search-space cells on a device configured under 'devices:' in "
        "params.yaml, with the device's backend and timing protocol. MODEL is a torchvision classifier builder "
        "(resnet18, mobilenet_v3_large, efficientnet_b0, ...; randomly initialised, nothing is downloaded), an "
        ".onnx file (for backends that run ONNX) or a .tflite file (tflite-cpu, android-adb). Rows are appended to "
        "STORE/DEVICE/ with the model's name, digest, FLOPs and parameters; a rerun measures only the passes "
        "still missing.",
        epilog="Example: leti measure-model --device torch-cpu resnet18 mobilenet_v3_large model.onnx",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="a torchvision builder name or an .onnx / .tflite file")
    parser.add_argument("--device", help="a device name under 'devices:' in the params file")
    parser.add_argument("--list", action="store_true", help="list the torchvision classifiers MODEL can name, and exit")
    parser.add_argument("--name", help="the name to store a single model file under (default: the file's stem)")
    parser.add_argument("--input-shape", type=shape, metavar="C,H,W",
                        help="input without the batch dim (default: 3,224,224 for torchvision; a file's own shape)")
    parser.add_argument("--batch", type=int, help="batch size (default: the device's protocol, measure.defaults.batch)")
    parser.add_argument("--passes", type=int, default=1, help="measurements per model, interleaved across models (default: %(default)s)")
    parser.add_argument("--op-profile", action="store_true",
                        help="also record per-operator times (torch.profiler after the timed runs, on torch backends)")
    parser.add_argument("--store", type=Path, default=Path("data/model_latency"), help="latency store folder (default: %(default)s)")
    parser.add_argument("--op-profiles", type=Path, default=None,
                        help="where per-operator rows go (default: op_profiles beside STORE, e.g. data/op_profiles)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("--retry-errors", action="store_true", help="measure again models whose last attempt failed")
    parser.add_argument("--retries", type=int, default=3, help="device retries before giving up (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(networks.torchvision_names()))
        return 0
    if not args.device or not args.models:
        raise ValueError("give --device and at least one MODEL (or --list)")
    if args.name and len(args.models) != 1:
        raise ValueError("--name names a single model")
    device = device_from_params(args.device, args.params)
    if args.batch is not None:
        device = named_models.with_batch(device, args.batch)
    sources = [networks.resolve(spec, args.name) for spec in args.models]
    results = named_models.measure_models(
        sources, device, args.store, input_shape=args.input_shape, passes=args.passes, retry_errors=args.retry_errors,
        op_profile=args.op_profile, op_profile_store=args.op_profiles, retries=args.retries, progress=not args.no_progress,
        on_result=lambda result: print(json.dumps(result.summary()), flush=True),
    )
    if not results:
        print(json.dumps({"device": device.name, "measured": 0, "note": f"every pass is already in {args.store}"}))
    return 1 if any(result.error for result in results) else 0
