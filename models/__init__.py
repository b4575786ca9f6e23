# Abstract models first: the models inheriting them are built after them.
from . import marketing_event_ingestion
from . import marketing_subscription_tracking_mixin

# isort: split
from . import base_automation
from . import mailing_contact
from . import mailing_list
from . import mailing_mailing
from . import mailing_subscription
from . import mailing_trace
from . import marketing_engagement_log
from . import marketing_engagement_rule
from . import marketing_event
from . import marketing_event_category
from . import marketing_event_source
from . import marketing_event_type
from . import marketing_record_trigger
from . import marketing_scenario
from . import marketing_scenario_enrollment
from . import marketing_scenario_node
from . import marketing_scenario_participant
from . import marketing_scenario_statistics
from . import marketing_scenario_step
from . import marketing_scenario_template
from . import marketing_segment
from . import marketing_segment_member
from . import marketing_segment_rule
from . import marketing_system_automation
from . import marketing_system_automation_job
from . import marketing_system_automation_run
from . import marketing_system_automation_run_job
from . import marketing_system_schedule
from . import res_company
from . import res_config_settings
from . import res_partner
from . import scenario_node
