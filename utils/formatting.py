"""How hours and score conditions read in summaries and on the canvas."""


def format_hour(value):
    """A float hour as ``HH:MM`` (9.5 -> ``09:30``)."""
    hours, minutes = divmod(round((value or 0) * 60), 60)
    return f"{hours:02d}:{minutes:02d}"


def format_score_condition(env, operator_labels, operator, threshold):
    """``Score is greater than 40``; the threshold is left out for "is empty" and "is not empty"."""
    text = env._("Score %(operator)s", operator=operator_labels.get(operator, ""))
    if operator not in ("empty", "not_empty"):
        text = f"{text} {threshold}"
    return text
