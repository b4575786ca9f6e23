from . import (
    test_engagement_access,
    test_engagement_concurrency,
    test_engagement_decay,
    test_engagement_rules,
    test_engagement_score_core,
    test_engagement_tour,
    test_event_api,
    test_event_type,
    test_params_filter,
)
