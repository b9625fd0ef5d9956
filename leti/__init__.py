"""leti: a Latency Estimation Tool for Investigation of neural-network inference."""

__version__ = "0.1.0"
