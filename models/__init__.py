from . import mailing_trace
from . import marketing_engagement_log
from . import marketing_event
from . import marketing_event_category
from . import marketing_event_source
from . import marketing_event_type
from . import res_partner
