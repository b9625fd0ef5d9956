"""The layer-wise lookup table of a device: each distinct operator instance of a space's networks
timed alone (the ProxylessNAS / nn-Meter-kernel baseline), appended to ``<store>/<device>/``.

An instance is an operator with its input shape, channels and stride; which instances a network
runs is the space's business (``leti.spaces.operators``). Each operator's row is appended as its own
part, so a stop loses at most the operator in flight and a rerun resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import torch

from leti import spaces
from leti.devices.config import DeviceConfig
from leti.measure.session import measure_one, measuring_session
from leti.store import tables
from leti.store.parts import device_dir, write_part


def current_rows(folder: Path, device: DeviceConfig) -> pl.DataFrame:
    """The folder's rows under the device's configuration, errors included: what a rerun skips."""
    rows = tables.read(folder, tables.OP_LATENCY) if folder.exists() else tables.empty(tables.OP_LATENCY)
    return rows.filter(pl.col("config_id") == device.config_id)


def measure_ops(device: DeviceConfig, store: Path, retries: int = 3, backoff_seconds: float = 2.0) -> pl.DataFrame:
    """Measure every distinct operator instance not yet in ``store`` for this device and config;
    returns the configuration's rows (errors included)."""
    folder = device_dir(store, device.name)
    decomposition = spaces.operators(device.space.NAME)
    protocol = device.protocol
    with measuring_session(device, folder, retries, backoff_seconds) as session, session.pinned():
        done = set(current_rows(folder, device)["op_key"].to_list())
        for instance in decomposition.distinct_ops(device.network):
            if instance.key in done:
                continue
            example = torch.randn(instance.input_shape(protocol.batch))
            row = session.row(op_key=instance.key, op=instance.op, input_shape=instance.input_shape(protocol.batch),
                              channels_in=instance.channels_in, channels_out=instance.channels_out, stride=instance.stride)

            def artifact(instance=instance, example=example):  # noqa: ANN001, ANN202 - bound per operator
                return session.backend.prepare(decomposition.build_op(instance).eval(), example, session.workdir)

            measured = session.retry(lambda row=row, artifact=artifact, example=example: measure_one(session, row, artifact, example))
            write_part([measured.row], store, device.name, tables.OP_LATENCY)
            if protocol.cooldown_seconds:
                time.sleep(protocol.cooldown_seconds)
    return current_rows(folder, device)
