"""The correlation value of an event: what ties it to one run (a cart, an order), without the ORM."""

CORRELATION_VALUE_MAX_LENGTH = 255


def correlation_value(params, path):
    """The value of the parameter ``path`` (dotted for nested objects) of ``params`` as text, or None.

    Numbers and strings compare as the shop sent them: ``42`` and ``"42"`` are
    the same cart, ``42.0`` too. Objects, lists and nulls identify nothing.
    """
    value = params
    for name in (path or "").split("."):
        if not name or not isinstance(value, dict):
            return None
        value = value.get(name)
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)[:CORRELATION_VALUE_MAX_LENGTH]


def correlation_matches(run_value, params, path):
    """Whether an event with ``params`` concerns the run whose correlation value is ``run_value``.

    An event that does not carry the parameter (an unsubscription, a purchase
    the shop could not tie to a cart) is about the contact, not about one of
    his runs: it concerns them all.
    """
    if not path:
        return True
    value = correlation_value(params or {}, path)
    return value is None or value == run_value
