"""Lift of a treated group over a control group: the difference of two proportions and its confidence interval.

The interval is Newcombe's hybrid score interval (Newcombe 1998, method 10),
built from the Wilson score interval of each proportion: unlike the Wald
interval it stays inside [-1, 1] and keeps its coverage for small samples and
for rates near 0 or 1, which is where conversion rates of marketing
scenarios live.
"""

import math
from dataclasses import dataclass

# Two-sided 95 %.
Z_95 = 1.959963984540054
# Under this many contacts in a group, or this many conversions or
# non-conversions, the normal approximation behind any such interval is not
# trusted: the lift is shown but called "sample too small".
MIN_GROUP_SIZE = 30
MIN_OUTCOMES = 5


def wilson_interval(successes, total, z=Z_95):
    """The Wilson score interval (low, high) of the proportion successes/total; (0, 1) without data."""
    if not total:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def newcombe_interval(successes_a, total_a, successes_b, total_b, z=Z_95):
    """The hybrid score interval (low, high) of p_a - p_b."""
    p_a = successes_a / total_a
    p_b = successes_b / total_b
    low_a, high_a = wilson_interval(successes_a, total_a, z)
    low_b, high_b = wilson_interval(successes_b, total_b, z)
    difference = p_a - p_b
    low = difference - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = difference + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return low, high


@dataclass(frozen=True)
class Lift:
    """Treated against control; rates and differences as fractions (0.05 is five points)."""

    treated_rate: float
    control_rate: float
    absolute: float
    relative: float | None  # None when the control group never converted
    low: float
    high: float
    status: str  # "no_data", "too_small", "significant" or "not_significant"


def conversion_lift(treated_conversions, treated_total, control_conversions, control_total):
    """Compare the conversion of the treated contacts with that of the control group."""
    if not treated_total or not control_total:
        return Lift(0.0, 0.0, 0.0, None, 0.0, 0.0, "no_data")
    treated_rate = treated_conversions / treated_total
    control_rate = control_conversions / control_total
    absolute = treated_rate - control_rate
    relative = absolute / control_rate if control_rate else None
    low, high = newcombe_interval(treated_conversions, treated_total, control_conversions, control_total)
    small = min(treated_total, control_total) < MIN_GROUP_SIZE or any(
        count < MIN_OUTCOMES
        for count in (
            treated_conversions,
            treated_total - treated_conversions,
            control_conversions,
            control_total - control_conversions,
        )
    )
    if small:
        status = "too_small"
    elif low > 0 or high < 0:
        status = "significant"
    else:
        status = "not_significant"
    return Lift(treated_rate, control_rate, absolute, relative, low, high, status)
