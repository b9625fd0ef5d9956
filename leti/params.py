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


def device_cells(name: str, space: str, path: str | Path = "params.yaml") -> int | None:
    """How many of ``space``'s sampled cells ``devices.<name>`` measures: its ``cells.<space>`` (the
    first N in sample order, a uniform subset since the sample is drawn in random order), or None for
    all. A device that only serves a comparison (a second runtime on the same CPU) need not pay for
    every cell the predictors learn from."""
    entry = (load(path).get("devices") or {}).get(name) or {}
    caps = entry.get("cells") or {}
    if not isinstance(caps, dict):
        raise ValueError(f"devices.{name}.cells in {path} must map a space to a number of cells (e.g. {{nb201: 300}}), got {caps!r}")
    for known in caps:
        spaces.get(known)  # an unknown space name fails here, in one line
    cap = caps.get(space)
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValueError(f"devices.{name}.cells.{space} in {path} must be a positive whole number of cells, got {cap!r}")
    return cap
