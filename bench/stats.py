"""Small statistics for the benchmark: medians with their spread, percentiles, paired ratios.

Every figure the benchmark prints is a :class:`Summary` of several samples: the median, with the
minimum and maximum beside it. Ratios between contenders are computed pair by pair (run *i* of
one against run *i* of the other, measured minutes apart on the same engines) and then summarised.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median, min and max of some samples (the samples themselves are kept for the JSON)."""

    median: float
    low: float
    high: float
    samples: tuple[float, ...]

    def text(self, fmt: str = ".2f") -> str:
        """``1.23 (1.10-1.40)``; a single sample has no range."""
        if len(self.samples) == 1:
            return format(self.median, fmt)
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"

    def as_dict(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "samples": list(self.samples),
        }


def summarise(samples: Sequence[float]) -> Summary:
    """The :class:`Summary` of ``samples`` (at least one)."""
    values = [float(s) for s in samples]
    if not values:
        raise ValueError("no samples to summarise")
    return Summary(statistics.median(values), min(values), max(values), tuple(values))


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) by the nearest-rank method: an observed value."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for every run both have."""
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d > 0]
