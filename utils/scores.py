"""Engagement scores without the ORM: bands, conditions on a score, and how they read."""

from .constants import COMPARISONS

SCORE_OPERATORS = [
    ("=", "is equal to"),
    ("!=", "is not equal to"),
    (">", "is greater than"),
    (">=", "is greater than or equal to"),
    ("<", "is less than"),
    ("<=", "is less than or equal to"),
    ("empty", "is empty"),
    ("not_empty", "is not empty"),
]

# Score bands of the contact list and kanban ("hot", "cold" filters).
HOT_SCORE = 50
COLD_SCORE = 10
SCORE_BANDS = [
    ("none", "Never scored"),
    ("cold", "Cold"),
    ("warm", "Warm"),
    ("hot", "Hot"),
]


def score_band(score, score_set):
    if not score_set:
        return "none"
    if score >= HOT_SCORE:
        return "hot"
    if score < COLD_SCORE:
        return "cold"
    return "warm"


def score_matches(operator, threshold, score):
    """Whether a score (None when the contact was never scored) satisfies ``operator threshold``.

    An empty score only satisfies "is empty": it is not 0, so "< 10" does not hold for it.
    """
    if operator == "empty":
        return score is None
    if operator == "not_empty":
        return score is not None
    if score is None:
        return False
    return COMPARISONS[operator](score, threshold)


def score_domain(operator, threshold):
    """The res.partner domain of ``score_matches``, to filter contacts in the database."""
    if operator == "empty":
        return [("engagement_score_set", "=", False)]
    if operator == "not_empty":
        return [("engagement_score_set", "=", True)]
    return [("engagement_score_set", "=", True), ("engagement_score", operator, threshold)]
