"""Values several models share, defined once."""

import operator

# Comparison operators as marketers write them (filters, score conditions, searches).
COMPARISONS = {
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

# The way a run goes on after a node: every child, the yes or no children of a
# condition or a wait for an event, or the arm a random split drew.
BRANCHES = [("always", "Always"), ("yes", "Yes"), ("no", "No"), ("arm", "Split arm")]

# Where one contact's run through a scenario stands, and each of its steps.
PARTICIPANT_STATES = [
    ("running", "Running"),
    ("completed", "Completed"),
    ("exited", "Exited"),
    ("canceled", "Canceled"),
]
STEP_STATES = [
    ("scheduled", "Scheduled"),
    ("done", "Done"),
    ("skipped", "Skipped"),
    ("canceled", "Canceled"),
    ("error", "Error"),
]
