"""Import published latency data (HELP, LatBench, any table) into a latency store (``<DIR>/<device>/part-*.parquet``).

Imported rows follow the ``LATENCY`` schema with ``backend="published"``: one sample per cell, so
median = iqm = mean = min = the published value. Rows go where measured ones do,
``<DIR>/<device>/<space>/``. HELP and LatBench released NAS-Bench-201 cells; a table names its space. A part's file name is a hash of its content, so
ingesting the same source twice writes nothing new and another device only adds its own folder.
Rows that cannot be read (malformed arch string, unknown op, missing or non-positive latency) are
listed with their row numbers; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from leti import spaces
from leti.spaces import nb201  # LatBench keys its cells by NB201 op-index vectors (nb201.from_op_indices)
from leti.store import tables

BACKEND = "published"
HELP_URL = "https://raw.githubusercontent.com/HayeonLee/HELP/main/data/nasbench201"
HELP_DEVICES: tuple[str, ...] = (
    "1080ti_1", "1080ti_32", "1080ti_256", "2080ti_1", "2080ti_32", "2080ti_256",
    "titan_rtx_1", "titan_rtx_32", "titanx_1", "titanx_32", "titanx_256",
    "titanxp_1", "titanxp_32", "titanxp_256", "gold_6240", "silver_4114", "silver_4210r",
    "pixel3", "samsung_a50", "samsung_s7", "essential_ph_1",
)
UNITS_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001}
PUBLISHED_SPACE = nb201.NAME
"""The space of HELP's and LatBench's releases."""


@dataclass(frozen=True)
class BadRow:
    row: int  # 0-based position in the source
    reason: str


@dataclass
class IngestResult:
    device: str
    source: str
    rows: int
    bad_rows: list[BadRow] = field(default_factory=list)
    written: Path | None = None  # None when the same content was already in the store

    def summary(self) -> dict:
        return {
            "device": self.device,
            "source": self.source,
            "rows": self.rows,
            "bad_rows": len(self.bad_rows),
            "written": str(self.written) if self.written else None,
        }


def canonicalizer(space: str) -> Callable[[object], str]:
    """arch string -> its canonical string in ``space`` (raises ``ArchStringError`` for a malformed one)."""
    chosen = spaces.get(space)
    return lambda arch: chosen.format_cell(chosen.parse(arch))


def check_rows(
    archs: Sequence[object], latencies_ms: Sequence[object], to_arch: Callable[[object], str]
) -> tuple[list[str], list[float], list[BadRow]]:
    """Canonical arch strings and latencies of the good rows, and the reason for each bad one.

    ``to_arch`` turns a source's cell (an arch string, or LatBench's op-index vector) into the
    canonical arch string, raising the space's ``ArchStringError`` (a ``ValueError``) when it cannot.
    """
    good_archs, good_latency, bad = [], [], []
    for row, (arch, latency) in enumerate(zip(archs, latencies_ms, strict=True)):
        try:
            canonical = to_arch(arch)
        except ValueError as error:
            bad.append(BadRow(row, str(error)))
            continue
        if latency is None or (isinstance(latency, float) and math.isnan(latency)):
            bad.append(BadRow(row, f"missing latency for {arch!r}"))
            continue
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency <= 0:
            bad.append(BadRow(row, f"non-positive or non-numeric latency {latency!r} ms for {arch!r}"))
            continue
        good_archs.append(canonical)
        good_latency.append(float(latency))
    return good_archs, good_latency, bad


def latency_frame(archs: Sequence[str], latency_ms: Sequence[float], device: str, source: str, space: str) -> pl.DataFrame:
    """Rows of the LATENCY table for published values (one sample each)."""
    n = len(archs)
    config_id = hashlib.sha256(json.dumps({"backend": BACKEND, "source": source}).encode()).hexdigest()[:16]
    columns = {
        "space": [space] * n,
        "arch": list(archs),
        "device": [device] * n,
        "backend": [BACKEND] * n,
        "source": [source] * n,
        "config_id": [config_id] * n,
        "samples_ms": [[value] for value in latency_ms],
        "median_ms": list(latency_ms),
        "iqm_ms": list(latency_ms),
        "mean_ms": list(latency_ms),
        "min_ms": list(latency_ms),
    }
    schema = tables.polars_schema(tables.LATENCY)
    frame = pl.DataFrame(columns, schema={name: schema[name] for name in columns})
    return frame.with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in schema.items() if name not in columns]
    ).select(list(schema))


def store_part(frame: pl.DataFrame, store: Path, device: str, space: str) -> Path | None:
    """Append ``frame`` as a content-hashed part in ``<store>/<device>/<space>/``; None when an
    identical part is already under the device's folder (also where stores put parts before spaces
    had folders of their own)."""
    buffer = io.BytesIO()
    frame.select("arch", "device", "source", "median_ms").write_csv(buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    name = f"part-published-{digest}.parquet"
    folder = Path(store) / device
    if folder.is_dir() and any(folder.rglob(name)):
        return None
    return tables.write(frame, folder / space / name, tables.LATENCY)


def ingest_rows(
    archs: Sequence[object],
    latencies_ms: Sequence[object],
    device: str,
    source: str,
    store: Path,
    space: str = PUBLISHED_SPACE,
    to_arch: Callable[[object], str] | None = None,
) -> IngestResult:
    if not device or "/" in device:
        raise ValueError(f"invalid device name {device!r}")
    good_archs, good_latency, bad = check_rows(archs, latencies_ms, to_arch or canonicalizer(space))
    duplicates = len(good_archs) - len(set(good_archs))
    if duplicates:
        raise ValueError(f"{source}: {duplicates} arch strings appear more than once for device {device!r}")
    written = None
    if good_archs:
        written = store_part(latency_frame(good_archs, good_latency, device, source, space), store, device, space)
    return IngestResult(device, source, len(good_archs), bad, written)


# --- HELP release layout ------------------------------------------------------------------------


def _open_help_file(location: str, relative: str) -> object:
    """``torch.load`` of a HELP file from a folder or a URL (plain Python objects only)."""
    import torch

    if location.startswith(("http://", "https://")):
        url = f"{location.rstrip('/')}/{relative}"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = io.BytesIO(response.read())
        except OSError as error:
            raise FileNotFoundError(f"cannot download {url}: {error}") from error
        return torch.load(payload, weights_only=True)
    path = Path(location) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected HELP's layout: str_arch2idx.pt, latency/<device>.pt)")
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign file
        raise ValueError(f"{path}: not a HELP torch file ({error})") from error


def help_root(location: str | Path) -> str:
    """The folder holding ``str_arch2idx.pt``: the path itself or its ``nasbench201/`` child."""
    location = str(location)
    if location.startswith(("http://", "https://")):
        return location
    path = Path(location)
    if not (path / "str_arch2idx.pt").exists() and (path / "nasbench201" / "str_arch2idx.pt").exists():
        path = path / "nasbench201"
    return str(path)


def help_devices(location: str | Path) -> list[str]:
    """Devices present in a local HELP copy, or every known HELP device for a URL."""
    root = help_root(location)
    if root.startswith(("http://", "https://")):
        return list(HELP_DEVICES)
    folder = Path(root) / "latency"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected HELP's layout: latency/<device>.pt)")
    return sorted(p.stem for p in folder.glob("*.pt"))


def ingest_help(location: str | Path, store: Path, devices: Sequence[str] | None = None) -> list[IngestResult]:
    """Import HELP's NAS-Bench-201 latencies (``str_arch2idx.pt`` + ``latency/<device>.pt``)."""
    root = help_root(location)
    available = help_devices(root)
    devices = list(devices) if devices else available
    unknown = [d for d in devices if d not in available]
    if unknown:
        raise KeyError(f"unknown HELP device {unknown[0]!r} in {root} (known: {', '.join(available)})")
    arch_to_index = _open_help_file(root, "str_arch2idx.pt")
    if not isinstance(arch_to_index, dict):
        raise ValueError(f"{root}/str_arch2idx.pt: expected a dict arch string -> index")
    results = []
    for device in devices:
        values = _open_help_file(root, f"latency/{device}.pt")
        if not isinstance(values, (list, tuple)) or len(values) != len(arch_to_index):
            raise ValueError(f"{root}/latency/{device}.pt: expected a list of {len(arch_to_index)} latencies")
        archs = list(arch_to_index)
        latencies = [values[arch_to_index[arch]] for arch in archs]
        results.append(ingest_rows(archs, latencies, device, "help", store, PUBLISHED_SPACE))
    return results


# --- LatBench release (BRP-NAS) ----------------------------------------------------------------


class _LatBenchUnpickler(pickle.Unpickler):
    """Loads only what a LatBench pickle holds (dicts, tuples, ints, floats, numpy float scalars).

    A pickle can run arbitrary code when loaded; refusing every other global keeps a foreign or
    malicious file from doing more than failing with a clear message.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_latbench(location: str | Path) -> dict:
    """The ``{op-index vector: latency in seconds}`` dict of one released LatBench pickle (file or URL)."""
    location = str(location)
    try:
        if location.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(location, timeout=60) as response:
                    payload = response.read()
            except OSError as error:
                raise FileNotFoundError(f"cannot download {location}: {error}") from error
        else:
            payload = Path(location).read_bytes()
        data = _LatBenchUnpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{location}: not a LatBench pickle ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{location}: not a LatBench pickle (expected a dict op-index vector -> seconds, got {type(data).__name__})")
    return data


def latbench_files(paths: Sequence[str | Path]) -> list[str]:
    """Released pickles named by ``paths``: files, URLs, or every ``*.pickle`` in a folder."""
    files: list[str] = []
    for path in map(str, paths):
        if path.startswith(("http://", "https://")) or Path(path).is_file():
            files.append(path)
        elif Path(path).is_dir():
            found = sorted(str(p) for p in Path(path).glob("*.pickle"))
            if not found:
                raise FileNotFoundError(f"{path}: no *.pickle files (expected LatBench's released pickles)")
            files.extend(found)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def latbench_device(location: str) -> str:
    """The device a released pickle measured, from its file name (``desktop-gpu-gtx-1080ti-fp32``)."""
    return Path(location.rsplit("/", 1)[-1]).stem


def _latbench_arch(vector: object) -> str:
    return nb201.format_cell(nb201.from_op_indices(vector))


def ingest_latbench(paths: Sequence[str | Path], store: Path, device: str | None = None) -> list[IngestResult]:
    """Import LatBench's NAS-Bench-201 latencies (seconds, keyed by op-index vectors) in milliseconds.

    Each pickle is one device, named after its file unless ``device`` is given (one pickle only).
    Cells without an input→output path are already absent from the release.
    """
    files = latbench_files(paths)
    if device is not None and len(files) != 1:
        raise ValueError(f"--device names one device, but {len(files)} pickles were given ({', '.join(files)})")
    results = []
    for location in files:
        data = read_latbench(location)
        seconds = list(data.values())
        milliseconds = [v * 1000.0 if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in seconds]
        name = device or latbench_device(location)
        results.append(ingest_rows(list(data), milliseconds, name, "latbench", store, PUBLISHED_SPACE, to_arch=_latbench_arch))
    return results


# --- any table ----------------------------------------------------------------------------------


def read_any_table(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=None)
    except Exception as error:  # noqa: BLE001 - polars raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable {suffix[1:]} table ({error})") from error
    raise ValueError(f"{path}: unsupported table type {suffix!r} (use .csv, .tsv or .parquet)")


def ingest_table(
    path: Path, space: str, device: str, arch_column: str, latency_column: str, unit: str, store: Path
) -> IngestResult:
    """Import a CSV/Parquet table of arch strings and latencies; ``source`` is the file name."""
    spaces.get(space)  # an unknown space fails here, in one line
    if unit not in UNITS_TO_MS:
        raise ValueError(f"unknown unit {unit!r} (known: {', '.join(UNITS_TO_MS)})")
    frame = read_any_table(Path(path))
    for column in (arch_column, latency_column):
        if column not in frame.columns:
            raise KeyError(f"{path}: no column {column!r} (columns: {', '.join(frame.columns)})")
    latency = frame[latency_column]
    if not latency.dtype.is_numeric():
        latency = latency.cast(pl.Float64, strict=False)
    scale = UNITS_TO_MS[unit]
    values = [None if v is None else v * scale for v in latency.to_list()]
    return ingest_rows(frame[arch_column].to_list(), values, device, Path(path).name, store, space)
