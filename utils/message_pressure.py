"""Frequency caps and quiet hours: when a marketing message may go out, as pure functions of time."""

from datetime import datetime
from datetime import time
from datetime import timedelta

import pytz


def cap_release(sent_at, cap, period):
    """The first moment another message fits under ``cap`` messages per ``period``, or None when one fits now.

    ``sent_at`` are the times (naive UTC, in order) of the messages sent within
    the last ``period``: the next one may go once enough of them have left the
    window, i.e. ``period`` after the oldest of the last ``cap - 1`` messages kept.
    """
    if len(sent_at) < cap:
        return None
    return sent_at[len(sent_at) - cap] + period


def quiet_hours_end(moment, tz, start, end):
    """When the quiet hours around ``moment`` (naive UTC) end, as naive UTC; None outside them.

    ``start`` and ``end`` are hours of the day in ``tz`` (21.0 and 8.0: from
    21:00 to 08:00 the next morning); quiet hours that start before they end
    lie within one day (12.0 to 14.0).
    """
    if start == end:
        return None
    local = pytz.utc.localize(moment).astimezone(tz)
    hour = local.hour + local.minute / 60 + local.second / 3600
    if start < end:
        if not start <= hour < end:
            return None
        end_day = local.date()
    else:
        if end <= hour < start:
            return None
        end_day = local.date() + timedelta(days=1) if hour >= start else local.date()
    hours, minutes = divmod(round(end * 60), 60)
    opening = tz.localize(datetime.combine(end_day, time(hours, minutes)))
    return opening.astimezone(pytz.utc).replace(tzinfo=None)
