"""Where rows live in a store, and how they are appended: one atomic Parquet part at a time.

A latency store is ``<store>/<device>/<space>/part-*.parquet``: a device folder holds every space
measured on it (readers filter on the ``space`` column), and the space folder lets a pipeline stage
depend on one space's rows alone. Per-device tables without a space (the per-op lookup) put their
parts in ``<store>/<device>/``. Parts are never rewritten: measuring appends, so nothing measured
is lost and a stopped campaign resumes from what its parts hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from leti.store import tables


def device_dir(store: Path, device: str) -> Path:
    return Path(store) / device


def space_dir(store: Path, device: str, space: str) -> Path:
    """Where a device's rows of one space go: ``<store>/<device>/<space>/``."""
    return device_dir(store, device) / space


def default_op_profile_store(store: Path) -> Path:
    """``op_profiles`` beside the latency store (``data/latency`` -> ``data/op_profiles``)."""
    return Path(store).parent / "op_profiles"


def write_part(rows: Sequence[dict[str, Any]], store: Path, device: str, schema: pa.Schema = tables.LATENCY) -> Path:
    """Append rows as a new part file (atomically). Rows of a space (all of one) go to
    ``<store>/<device>/<space>/``, others (per-op lookups) to ``<store>/<device>/``."""
    frame = pl.DataFrame(list(rows), schema=tables.polars_schema(schema), strict=False)
    found = set(frame["space"].to_list()) if "space" in frame.columns else set()
    if len(found) > 1:
        raise ValueError(f"one part holds one space's rows, not {sorted(found)}")
    folder = space_dir(store, device, found.pop()) if found else device_dir(store, device)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return tables.write(frame, folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet", schema)


def remove_stale_temp_files(folder: Path) -> None:
    """Delete half-written parts a killed writer left behind; call it holding the folder's lock."""
    for stale in Path(folder).glob(".part-*.tmp"):
        stale.unlink(missing_ok=True)
