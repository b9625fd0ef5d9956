"""Measurements you can trust on a drifting device: a sentinel cell timed around every chunk.

A VM's speed drifts (15 % within one 5-minute pass was seen on the 2-core development machine) and a
phone throttles when it heats up; a campaign that ignores it learns the drift as if it were the
cells' latency. So a campaign times one fixed cell of the space, the *sentinel* (``space.SENTINEL``),
with the device's own protocol before its first chunk and after every chunk, and

- **detects**: a chunk whose sentinel moved by more than ``threshold`` (relative, default 15 %, above this VM's sentinel noise) from
  before to after is measured again, up to ``max_attempts`` in all; every attempt's rows are kept
  (``attempt``, ``drifted``), and readers take the latest. A closing sentinel beyond the threshold is
  timed once more before the move is believed (``retime``): on this VM one sentinel timing per pass ran
  85-107 % slower than both neighbours, a hypervisor pause that would otherwise re-measure a chunk and
  correct the two chunks beside it by half. The first timing stays in the store as a sentinel row.
- **corrects**: every cell row gets ``min_ms_corrected`` = ``min_ms`` x reference / sentinel, the
  sentinel interpolated to the time the cell was measured, the reference being the configuration's
  first sentinel in the store: all rows at one reference speed, whichever campaign measured them;
- **records** the device's state (load, clocks, temperatures; a phone's thermal status) with each
  sentinel timing, and sums a campaign up in one line (:func:`quality_line`).

A sentinel timing is a row of the latency table with ``role = "sentinel"``, written in its chunk's
part; the readers of cells leave them out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leti.measure.session import Measured, Session, measure_one

ROLE = "sentinel"


class SentinelError(ValueError):
    """The sentinel cell could not be timed on the device (the message names it): without it no chunk
    can be checked, so the campaign stops instead of measuring blind."""


@dataclass(frozen=True)
class SentinelPolicy:
    """``measure.sentinel`` in params.yaml."""

    enabled: bool = True
    threshold: float = 0.15  # relative move of the sentinel within a chunk that re-measures it (params.yaml: why)
    max_attempts: int = 2  # measurements of a chunk in all, the first included
    reuse_seconds: float = 30.0  # a sentinel timed this recently (after the last chunk) opens the next one
    retime: bool = True  # a closing sentinel beyond the threshold is timed again, and the second timing decides

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"measure.sentinel.threshold must be > 0 (a relative move such as 0.03), got {self.threshold}")
        if self.max_attempts < 1:
            raise ValueError(f"measure.sentinel.max_attempts must be >= 1, got {self.max_attempts}")

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> SentinelPolicy:
        section = dict(section or {})
        unknown = set(section) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"measure.sentinel: unknown keys {sorted(unknown)} (known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**section)


def time_sentinel(session: Session, artifact: Callable[[], Any], chunk: str, attempt: int) -> dict[str, Any]:
    """One sentinel row: the space's sentinel cell (``artifact`` returns what the device runs) timed
    with the device's protocol, the device's state beside it. A sentinel that fails to run raises
    ``SentinelError`` naming it."""
    device = session.device
    space = device.space
    example = space.example_input(device.network, device.protocol.batch)
    state = session.retry(session.backend.state)
    row = session.row(space=space.NAME, arch=space.SENTINEL, input_shape=list(example.shape), role=ROLE, chunk=chunk, attempt=attempt)
    measured: Measured = session.retry(lambda: measure_one(session, row, artifact, example, {**session.environment, "state": state}))
    if measured.failed:
        raise SentinelError(f"the sentinel cell {space.SENTINEL} of {space.NAME} failed on device {device.name!r}: {measured.row['error']}")
    return measured.row


def moved(before_ms: float, after_ms: float) -> float:
    """How far the sentinel moved within a chunk, relative to where it started."""
    return abs(after_ms / before_ms - 1.0)


def interpolated(before: dict[str, Any], after: dict[str, Any], when: datetime) -> float:
    """The sentinel's ``min_ms`` at ``when``: linear between its timings before and after the chunk."""
    start, end = before["measured_at"], after["measured_at"]
    span = (end - start).total_seconds()
    share = min(max((when - start).total_seconds() / span, 0.0), 1.0) if span > 0 else 0.5
    return before["min_ms"] + share * (after["min_ms"] - before["min_ms"])


def annotate(rows: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any] | None, reference_ms: float, chunk: str,
             attempt: int, drifted: bool) -> list[dict[str, Any]]:
    """The chunk's cell rows with their bracketing sentinel, attempt, and corrected statistic (none
    when the chunk has no closing sentinel: its device was lost)."""
    annotated = []
    for row in rows:
        extra = {"chunk": chunk, "attempt": attempt, "drifted": drifted, "sentinel_before_ms": before["min_ms"],
                 "sentinel_after_ms": after["min_ms"] if after else None, "sentinel_reference_ms": reference_ms}
        if row["error"] is None and after is not None:
            extra["min_ms_corrected"] = row["min_ms"] * reference_ms / interpolated(before, after, row["measured_at"])
        annotated.append({**row, **extra})
    return annotated


def new_chunk() -> str:
    return uuid.uuid4().hex[:12]
