"""leti: a Latency Estimation Tool for Investigation of neural-network inference.

``leti.load_predictor(device, space="nb201", model=None)`` gives NAS code a device's latency
predictor of search-space cells in process, ``leti.load_kernel_predictor(device)`` its kernel-level
predictor of any network (``leti.api``).
"""

from leti import project

__version__ = "0.1.0"

# Before any entry point imports Prefect, MLflow or ONNX Runtime: their state stays in the project.
project.use_local_state()

LAZY = {"load_predictor": "api", "load_kernel_predictor": "api"}
"""Attributes of the package loaded from their module on first use (PEP 562), so importing any part
of leti (a pipeline stage, the ``leti`` command) does not import MLflow for them."""


def __getattr__(name: str) -> object:
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
