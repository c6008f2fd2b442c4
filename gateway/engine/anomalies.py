"""Cost anomalies: is an hour's spend (or request count) far above its own recent baseline?

The statistic, as docs/cost.md states it:

- The baseline is the subject's (a balancer's or a team's) hourly values over the hours
  before the hour checked: up to a week, from its first hour with traffic, hours without
  traffic counted as 0. Fewer than a day of baseline hours: no verdict (too little history).
- Its centre is the median and its spread the median absolute deviation (MAD), scaled by
  1.4826 so that it estimates the standard deviation of normally distributed values. Both
  ignore the odd spike in the baseline itself, where a mean and a standard deviation would
  be dragged up by it (Iglewicz and Hoaglin's modified z-score).
- The hour is an anomaly when its value is above ``median + max(k x 1.4826 x MAD,
  min_excess)``. ``k`` (3.5 by default, Iglewicz and Hoaglin's cut-off) sets how unusual;
  ``min_excess`` (per metric) keeps a flat baseline, whose MAD is 0, from flagging every
  cent or every request above it.

Only rises are flagged: a drop in spend is not a cost anomaly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAD_SCALE = 1.4826


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("the median of nothing")
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True, slots=True)
class Assessment:
    value: float
    median: float
    mad: float
    upper: float  # the bound above which the value is an anomaly

    @property
    def anomalous(self) -> bool:
        return self.value > self.upper


def assess(
    history: Sequence[float], value: float, *, k: float, min_excess: float, min_history: int
) -> Assessment | None:
    """The verdict on `value` against `history`; None with fewer than `min_history` values."""
    if len(history) < max(min_history, 1):
        return None
    centre = median(history)
    mad = median([abs(x - centre) for x in history])
    upper = centre + max(k * MAD_SCALE * mad, min_excess)
    return Assessment(value=value, median=centre, mad=mad, upper=upper)
