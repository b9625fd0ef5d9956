"""Reading ``params.yaml``: each stage takes its own section (a device entry: ``leti.devices.config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from leti import spaces


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


def device_spaces(name: str, path: str | Path = "params.yaml") -> list[str]:
    """The spaces ``devices.<name>`` measures: its ``spaces:`` list, else every space under ``spaces:``
    (NAS-Bench-201 in a params file without one)."""
    params = load(path)
    pipeline = list(params.get("spaces") or {}) or [spaces.DEFAULT]
    entry = (params.get("devices") or {}).get(name) or {}
    chosen = list(entry.get("spaces") or pipeline)
    for space in chosen:
        spaces.get(space)  # an unknown name fails here, in one line
    return chosen
