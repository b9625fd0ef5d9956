"""Reading ``params.yaml``: each stage takes its own section and the device table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from leti.campaign import DeviceConfig


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no params file")
    return yaml.safe_load(path.read_text()) or {}


def section(name: str, path: str | Path = "params.yaml") -> dict[str, Any]:
    params = load(path)
    if name not in params:
        raise KeyError(f"{path}: no '{name}' section")
    return params[name]


def device(name: str, path: str | Path = "params.yaml") -> DeviceConfig:
    """The named entry of ``devices:``, with ``measure.defaults`` filling unset protocol keys."""
    params = load(path)
    devices = params.get("devices") or {}
    if name not in devices:
        raise KeyError(f"unknown device {name!r}: params.yaml 'devices' has {', '.join(sorted(devices)) or 'none'}")
    defaults = (params.get("measure") or {}).get("defaults") or {}
    return DeviceConfig.from_params(name, devices[name] or {}, defaults)
