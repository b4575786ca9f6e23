from . import test_engagement_score_core
from . import test_event_api
from . import test_event_type
from . import test_event_type_views
from . import test_list_and_system_events
from . import test_mailing_trace_events
from . import test_openapi_contract
from . import test_segment_api
