from . import (
    marketing_engagement_log,
    marketing_event,
    marketing_event_category,
    marketing_event_source,
    marketing_event_type,
    marketing_system_automation,
    marketing_system_automation_job,
    marketing_system_automation_run,
    marketing_system_automation_run_job,
    marketing_system_schedule,
    res_partner,
)
