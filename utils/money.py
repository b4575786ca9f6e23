"""Money carried by events: the value of a parameter as a number."""

import math


def param_at(params, path):
    """The value at ``path`` (a list of keys) of an event's parameters, or None."""
    value = params
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def number_or_none(value):
    """``value`` as a finite float when it is a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)
