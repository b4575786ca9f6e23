from . import (
    mailing_contact,
    mailing_list,
    mailing_mailing,
    mailing_subscription,
    mailing_trace,
    marketing_engagement_log,
    marketing_event,
    marketing_event_category,
    marketing_event_source,
    marketing_event_type,
    res_partner,
)
