from datetime import date
from datetime import datetime
from datetime import timezone


def array_literal(values):
    """``values`` as one PostgreSQL array literal (``'{1,2,NULL}'``), to pass as a parameter cast to its type.

    psycopg2 sends a Python list as ``ARRAY[...]`` with each element adapted
    and cast on its own: for the engine's batches (hundreds of rows, a dozen
    columns) building that text and parsing it cost as much as the statement
    itself. One string per column is built at once and parsed by the array
    type's input function. Elements: None, booleans, numbers, strings, dates
    and datetimes (an aware one in UTC, naive as the ORM stores them).
    """
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value):
    if value is None:
        return "NULL"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return f'"{value.isoformat(sep=" ")}"'
    if isinstance(value, date):
        return f'"{value.isoformat()}"'
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
