"""Parquet tables: every schema declared once here with pyarrow, read and written with polars.

Writing validates a frame against its schema and replaces the file atomically (temp file +
rename), so a crash never leaves half a table. Files get the usual permissions (0666 less the
umask, like any file a tool writes), so a store on a shared disk is readable by the whole team. Reading checks every declared column's presence and
type and names the file and the column when one is wrong, so a corrupt or foreign file fails at
the door instead of deep inside a predictor.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa

ADDED = {b"leti.added": b"true"}
"""Field metadata of a nullable column added after stores were written: a file without it reads
it as nulls, so a schema can grow without rewriting anyone's measurements."""


def added(name: str, type_: pa.DataType) -> pa.Field:
    """A nullable column added to a table that existing stores lack (see ``ADDED``)."""
    return pa.field(name, type_, nullable=True, metadata=ADDED)


ARCHITECTURES = pa.schema(
    [
        pa.field("space", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("canonical_id", pa.string(), nullable=False),  # the space's isomorphism class (NB101: the benchmark's hash)
        pa.field("valid", pa.bool_(), nullable=False),
        pa.field("flops", pa.int64()),
        pa.field("params", pa.int64()),
    ],
    metadata={"leti.table": "architectures"},
)

TIMING = [
    pa.field("samples_ms", pa.list_(pa.float64())),  # every timed run, kept raw
    pa.field("median_ms", pa.float64()),
    pa.field("iqm_ms", pa.float64()),
    pa.field("mean_ms", pa.float64()),
    pa.field("min_ms", pa.float64()),
    pa.field("std_ms", pa.float64()),
    pa.field("cv", pa.float64()),
    pa.field("unstable", pa.bool_()),  # cv above the protocol's threshold
]
"""Raw samples and summary statistics, shared by the network and per-operator latency tables."""

LATENCY = pa.schema(
    [
        pa.field("space", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "leti" when measured here, else dataset
        pa.field("config_id", pa.string(), nullable=False),  # hash of everything that shapes a run
        pa.field("batch", pa.int32()),
        pa.field("input_shape", pa.list_(pa.int32())),
        pa.field("threads", pa.int32()),
        pa.field("cpu_affinity", pa.list_(pa.int32())),
        pa.field("warmup_runs", pa.int32()),
        pa.field("warmup_seconds", pa.float64()),
        pa.field("runs", pa.int32()),
        *TIMING,
        pa.field("error", pa.string()),  # null on success; the failure message otherwise
        pa.field("measured_at", pa.timestamp("us", tz="UTC")),
        pa.field("host", pa.string()),
        pa.field("environment", pa.string()),  # JSON: CPU, governor, library versions, options
        # a named network (`leti measure-model`; arch is its name): null for search-space cells,
        # whose FLOPs and params are in the architectures table
        added("model_digest", pa.string()),  # sha256 of the ONNX/TFLite file, or of a torchvision network's definition
        added("flops", pa.int64()),  # per forward pass of the measured batch, 2 per multiply-add
        added("params", pa.int64()),
        # drift (leti.measure.sentinel): the sentinel cell timed around each chunk, and each cell's
        # statistic normalised to the configuration's reference speed; null in stores written before
        added("role", pa.string()),  # null: a measured cell; "sentinel": a timing of the space's sentinel cell
        added("chunk", pa.string()),  # the chunk attempt the row was measured in (cells and their sentinels)
        added("attempt", pa.int32()),  # 1 for a chunk's first measurement, 2... when its sentinel drifted
        added("drifted", pa.bool_()),  # the chunk's sentinel moved beyond the threshold on this attempt
        added("sentinel_before_ms", pa.float64()),  # the sentinel's min_ms before and after the cell's chunk
        added("sentinel_after_ms", pa.float64()),
        added("sentinel_reference_ms", pa.float64()),  # the configuration's first sentinel in the store
        added("min_ms_corrected", pa.float64()),  # min_ms x reference / the sentinel interpolated to the cell's time
    ],
    metadata={"leti.table": "latency"},
)

OP_LATENCY = pa.schema(
    [
        pa.field("op_key", pa.string(), nullable=False),  # op|c_in|c_out|size|stride: the lookup key
        pa.field("op", pa.string(), nullable=False),  # e.g. nor_conv_3x3, stem, reduction, head
        pa.field("input_shape", pa.list_(pa.int32()), nullable=False),  # NCHW
        pa.field("channels_in", pa.int32(), nullable=False),
        pa.field("channels_out", pa.int32(), nullable=False),
        pa.field("stride", pa.int32(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("config_id", pa.string(), nullable=False),
        pa.field("runs", pa.int32()),
        *TIMING,
        pa.field("error", pa.string()),
        pa.field("measured_at", pa.timestamp("us", tz="UTC")),
        pa.field("environment", pa.string()),
    ],
    metadata={"leti.table": "op_latency"},
)

OP_PROFILE = pa.schema(
    [
        # the latency row this profile belongs to: (arch, device, config_id, measured_at)
        pa.field("space", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("config_id", pa.string(), nullable=False),
        pa.field("measured_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("node_index", pa.int32(), nullable=False),  # run order in the tool's table
        pa.field("node_name", pa.string()),  # the converted graph's node name
        pa.field("op_type", pa.string(), nullable=False),  # e.g. CONV_2D, ADD, TfLiteGpuDelegateV2
        pa.field("avg_ms", pa.float64(), nullable=False),  # mean over the timed runs
        pa.field("first_ms", pa.float64()),
        pa.field("share", pa.float64()),  # fraction of the profiled time (the tool's [%] / 100)
        pa.field("times_called", pa.int32()),
    ],
    metadata={"leti.table": "op_profile"},
)
"""Per-operator times of one measured network, as the device's profiler reported them (Android's
``benchmark_model --enable_op_profiling``), kept raw beside the network's latency row."""

KERNEL_LATENCY = pa.schema(
    [
        pa.field("kernel_key", pa.string(), nullable=False),  # type|field=value,...: the resume key
        pa.field("kernel_type", pa.string(), nullable=False),  # fused op kinds, e.g. conv+bn+relu; empty = per-call overhead
        pa.field("shape", pa.string(), nullable=False),  # JSON of the kernel's configuration (leti.features.kernels.SHAPE_FIELDS)
        pa.field("campaign", pa.string(), nullable=False),  # fusion | sample | adaptive | empty
        pa.field("round", pa.int32()),  # adaptive round (0: the first samples)
        added("replicas", pa.int32()),  # copies of the kernel the timed model ran side by side (null: one)
        added("edge_ms", pa.float64()),  # per run, the runtime's layout conversions at the model's edges (Backend.edge_ms; null: none known)
        pa.field("flops", pa.int64()),
        pa.field("bytes", pa.int64()),  # float32 bytes read and written
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("config_id", pa.string(), nullable=False),  # backend, options and protocol (leti.measure.kernels.config_id)
        pa.field("threads", pa.int32()),
        pa.field("cpu_affinity", pa.list_(pa.int32())),
        pa.field("warmup_runs", pa.int32()),
        pa.field("runs", pa.int32()),
        *TIMING,
        pa.field("error", pa.string()),
        pa.field("measured_at", pa.timestamp("us", tz="UTC")),
        pa.field("host", pa.string()),
        pa.field("environment", pa.string()),
    ],
    metadata={"leti.table": "kernel_latency"},
)
"""One-kernel models timed alone: the samples kernel predictors learn from, the fusion tests' models,
and the per-call overhead (``empty``) at the start of every chunk."""

FUSION_RULES = pa.schema(
    [
        pa.field("device", pa.string(), nullable=False),
        pa.field("backend", pa.string(), nullable=False),
        pa.field("config_id", pa.string(), nullable=False),
        pa.field("first", pa.string(), nullable=False),  # the anchor op kind
        pa.field("second", pa.string(), nullable=False),  # the op that follows it
        pa.field("case", pa.int32(), nullable=False),  # which test configuration
        pa.field("shape", pa.string()),  # JSON of the anchor's configuration
        pa.field("first_ms", pa.float64()),  # each alone, and the pair, less the per-call overhead
        pa.field("second_ms", pa.float64()),
        pa.field("pair_ms", pa.float64()),
        pa.field("overhead_ms", pa.float64()),
        pa.field("saving", pa.float64()),  # (first + second - pair) / min(first, second)
        pa.field("threshold", pa.float64()),
        pa.field("fused", pa.bool_(), nullable=False),  # this case's verdict; the rule is the median saving's
        pa.field("decided_at", pa.timestamp("us", tz="UTC")),
    ],
    metadata={"leti.table": "fusion_rules"},
)
"""A device's fusion tests: does its runtime run op ``first`` then ``second`` as one kernel?"""

FEATURES = pa.schema(
    [
        pa.field("space", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("feature_set", pa.string(), nullable=False),
        pa.field("values", pa.list_(pa.float32()), nullable=False),
    ],
    metadata={"leti.table": "features"},
)

GRAPHS = pa.schema(
    [
        pa.field("space", pa.string(), nullable=False),
        pa.field("arch", pa.string(), nullable=False),
        pa.field("nodes", pa.list_(pa.string()), nullable=False),  # a label per node slot; null = empty slot
        pa.field("edge_src", pa.list_(pa.int32()), nullable=False),  # data-flow edges between slots
        pa.field("edge_dst", pa.list_(pa.int32()), nullable=False),
    ],
    metadata={"leti.table": "graphs"},
)
"""Each cell's graph as its space defines it (``leti.spaces.base.CellGraph``); the GCN adds the global node."""

PREDICTIONS = pa.schema(
    [
        pa.field("arch", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("predictor", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("measured_ms", pa.float64(), nullable=False),
        pa.field("predicted_ms", pa.float64(), nullable=False),
    ],
    metadata={"leti.table": "predictions"},
)


class TableError(ValueError):
    """A Parquet file or frame that does not match its declared schema; the message names both."""


def polars_schema(schema: pa.Schema) -> pl.Schema:
    return pl.from_arrow(schema.empty_table()).schema


def empty(schema: pa.Schema) -> pl.DataFrame:
    return pl.from_arrow(schema.empty_table())


def conform(frame: pl.DataFrame, schema: pa.Schema, where: str = "frame") -> pl.DataFrame:
    """Select and order the declared columns, checking each one's type and nullability."""
    expected = polars_schema(schema)
    frame = frame.with_columns(
        pl.lit(None, dtype=expected[field.name]).alias(field.name) for field in schema
        if is_added(field) and field.name not in frame.columns
    )
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise TableError(f"{where}: missing column {missing[0]!r} of the {_table_name(schema)} table")
    for name, dtype in expected.items():
        if not compatible(frame.schema[name], dtype):
            raise TableError(
                f"{where}: column {name!r} has type {frame.schema[name]}, expected {dtype}"
            )
    frame = frame.select([pl.col(name).cast(dtype, strict=True) for name, dtype in expected.items()])
    for field in schema:
        if not field.nullable and frame[field.name].null_count():
            raise TableError(f"{where}: column {field.name!r} has nulls but is required")
    return frame


def write(frame: pl.DataFrame, path: str | Path, schema: pa.Schema) -> Path:
    """Validate ``frame`` and write it to ``path`` atomically."""
    path = Path(path)
    frame = conform(frame, schema, where=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique hidden name in the same folder (so the rename is atomic), created by the Parquet
    # writer itself: mkstemp would make it 0600 and the finished table unreadable to teammates.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read(path: str | Path, schema: pa.Schema) -> pl.DataFrame:
    """Read one Parquet file, or every ``*.parquet`` under a folder, checked against ``schema``."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not parts:
            return empty(schema)
        return pl.concat([read(part, schema) for part in parts], how="vertical")
    if not path.exists():
        raise TableError(f"{path}: no such file")
    try:
        found = pl.read_parquet_schema(path)
    except Exception as error:  # noqa: BLE001 - polars raises several types for a corrupt file
        raise TableError(f"{path}: not a readable Parquet file ({error})") from error
    for name, dtype in polars_schema(schema).items():
        if name not in found:
            if is_added(schema.field(name)):
                continue
            raise TableError(f"{path}: missing column {name!r} of the {_table_name(schema)} table")
        if not compatible(found[name], dtype):
            raise TableError(f"{path}: column {name!r} has type {found[name]}, expected {dtype}")
    columns = [name for name in schema.names if name in found]
    return conform(pl.read_parquet(path, columns=columns), schema, where=str(path))


def is_added(field: pa.Field) -> bool:
    return (field.metadata or {}).get(b"leti.added") == ADDED[b"leti.added"]


def compatible(actual: pl.DataType, expected: pl.DataType) -> bool:
    """Whether ``actual`` converts to ``expected`` without changing meaning (int32 -> int64, say)."""
    if actual == expected or actual == pl.Null:
        return True
    if isinstance(actual, pl.List) and isinstance(expected, pl.List):
        return compatible(actual.inner, expected.inner)
    if expected.is_float():
        return actual.is_float() or actual.is_integer()
    if expected.is_integer():
        return actual.is_integer()
    return isinstance(actual, pl.Datetime) and isinstance(expected, pl.Datetime)


def _table_name(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"leti.table", b"?").decode()
