from . import (
    test_engagement_score_core,
    test_event_api,
    test_event_type,
    test_event_type_views,
    test_list_and_system_events,
    test_mailing_trace_events,
)
