from . import test_event_api, test_event_type
