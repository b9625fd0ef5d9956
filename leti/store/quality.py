"""How much to trust stored measurements: the sentinel's drift, the chunks measured again, the runs' spread.

A campaign prints this line when it ends (``leti measure``), the measurement flow puts it in its
Prefect artifact, and ``train`` tags every MLflow run with it, from the rows it trained on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Quality:
    """A campaign (or a store) summed up: how far the device's speed moved, what was measured again,
    and how much the timed runs of a cell vary."""

    drift_low_pct: float | None  # the lowest and highest sentinel min_ms that bracketed a chunk, relative to the reference
    drift_high_pct: float | None
    chunks: int
    remeasured_chunks: int  # chunks measured more than once because their sentinel moved
    cv_median_pct: float | None  # median over the cells of the runs' coefficient of variation

    def line(self) -> str:
        drift = (f"drift {self.drift_low_pct:+.1f} % .. {self.drift_high_pct:+.1f} %" if self.drift_low_pct is not None
                 else "drift not tracked (no sentinel)")
        cv = f"CV median {self.cv_median_pct:.1f} %" if self.cv_median_pct is not None else "CV median n/a"
        return f"{drift}; {self.remeasured_chunks} of {self.chunks} chunks re-measured; {cv}"

    def tags(self) -> dict[str, str]:
        """The figures as MLflow tags (``measure.quality.*``) and the line itself."""
        values = {"drift_low_pct": self.drift_low_pct, "drift_high_pct": self.drift_high_pct, "chunks": self.chunks,
                  "remeasured_chunks": self.remeasured_chunks, "cv_median_pct": self.cv_median_pct}
        return {"measure.quality": self.line(), **{f"measure.quality.{k}": "" if v is None else f"{v:g}" for k, v in values.items()}}


def summarize(cells: pl.DataFrame, sentinels: pl.DataFrame) -> Quality:
    """:class:`Quality` of cell rows (every attempt) and the sentinel rows of their chunks. The drift is
    read from the sentinel timings that bracket the cells: a timing that was timed again because it
    alone moved (``measure.sentinel.retime``) stays in the store but is not drift."""
    reference = cells["sentinel_reference_ms"].drop_nulls()
    brackets = pl.concat([cells["sentinel_before_ms"], cells["sentinel_after_ms"]]).drop_nulls()
    if sentinels.height and reference.len() and brackets.len():
        relative = 100 * (brackets / reference[0] - 1)
        low, high = float(relative.min()), float(relative.max())
    else:
        low = high = None
    per_chunk = cells.filter(pl.col("chunk").is_not_null()).group_by("chunk").agg(pl.col("attempt").max())
    chunks, redone = per_chunk.height, per_chunk.filter(pl.col("attempt") > 1).height
    cv = cells["cv"].drop_nulls()
    return Quality(low, high, chunks, redone, float(statistics.median(cv.to_list()) * 100) if cv.len() else None)
