from . import (
    marketing_engagement_log,
    marketing_engagement_rule,
    marketing_event,
    marketing_event_category,
    marketing_event_source,
    marketing_event_type,
    res_company,
    res_config_settings,
    res_partner,
)
