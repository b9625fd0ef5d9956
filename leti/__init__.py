"""leti: a Latency Estimation Tool for Investigation of neural-network inference."""

from leti import project

__version__ = "0.1.0"

# Before any entry point imports Prefect, MLflow or ONNX Runtime: their state stays in the project.
project.use_local_state()
