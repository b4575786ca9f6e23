"""What each message status means on a mailing trace, for the SQL statistics and the Python conditions alike."""

from odoo.tools import SQL

# Traces in these states were never handed to the recipient.
FAILED_TRACE_STATUSES = ("cancel", "error")
# status: (trace_status values that show it, datetime column that shows it too)
MESSAGE_STATUSES = {
    "opened": (("open", "reply"), "open_datetime"),
    "clicked": ((), "links_click_datetime"),
    "replied": (("reply",), "reply_datetime"),
    "bounced": (("bounce",), None),
}
# The statuses a marketer counts on a message node, in the order of the statistics.
COUNTED_STATUSES = ("sent", *MESSAGE_STATUSES)


def trace_status_sql(status, alias="t"):
    """The SQL condition on the trace ``alias`` for one status of ``COUNTED_STATUSES``."""
    column = lambda name: SQL.identifier(alias, name)  # noqa: E731
    if status == "sent":
        return SQL("%s NOT IN %s", column("trace_status"), FAILED_TRACE_STATUSES)
    trace_statuses, datetime_column = MESSAGE_STATUSES[status]
    conditions = []
    if datetime_column:
        conditions.append(SQL("%s IS NOT NULL", column(datetime_column)))
    if trace_statuses:
        conditions.append(SQL("%s IN %s", column("trace_status"), trace_statuses))
    return SQL("(%s)", SQL(" OR ").join(conditions))


def trace_has_status(trace, status):
    """Whether the mailing.trace record ``trace`` shows ``status``, as ``trace_status_sql`` does."""
    if status == "sent":
        return trace.trace_status not in FAILED_TRACE_STATUSES
    trace_statuses, datetime_column = MESSAGE_STATUSES[status]
    return trace.trace_status in trace_statuses or bool(datetime_column and trace[datetime_column])
