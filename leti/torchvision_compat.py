"""Import torchvision on a CPU-only torch build. Every torchvision import goes through this module.

torchvision 0.28.0 is the release built for torch 2.13.0 (its wheel requires ``torch==2.13.0``,
which the local ``2.13.0+cpu`` build satisfies, so installing it never replaces torch). PyPI ships
it only as a CUDA build, whose C++ operators (``_C.so``: nms, roi_align, ...) link
``libtorch_cuda.so`` and cannot load beside a CPU-only torch. torchvision is meant to import
without them (``extension._has_ops()`` is then False and each operator raises a clear error when
called), but its ``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, and ``torch.library.register_fake`` fails on an operator
that does not exist (pytorch/vision issues 9085 and 9337; the open pull request 9649 guards them).

So when the operators cannot load, this module declares those two schemas, with no kernel,
before the import. The classifiers leti builds never call them; ``torchvision.ops.nms`` still
raises torchvision's own "Couldn't load custom C++ ops" error. With a CUDA torch (or a future
torchvision) the extension loads and nothing here runs.
"""

from __future__ import annotations

import sys
from types import ModuleType

UNGUARDED_OPERATORS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
"""The schemas of torchvision's operators whose fake kernels it registers without checking."""

_library = None  # the torch.library.Library holding the declared schemas, kept alive


def import_torchvision() -> ModuleType:
    """``torchvision``, importable whether or not its C++ operators load with this torch."""
    global _library
    try:
        import torchvision
    except ModuleNotFoundError as error:
        raise ImportError(f"torchvision is not installed ({error}); reinstall leti: pip install -e .") from error
    except RuntimeError as error:
        if "torchvision::" not in str(error) or "does not exist" not in str(error):
            raise
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package; its extension found no operators
        import torch

        _library = torch.library.Library("torchvision", "DEF")
        for schema in UNGUARDED_OPERATORS:
            _library.define(schema)
        import torchvision
    return torchvision
