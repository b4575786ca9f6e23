{
    "name": "Event-Based Marketing Automation",
    "summary": "Event registry, HTTP/Segment event API, scenarios and engagement scores",
    "version": "18.0.1.0.0",
    "category": "Marketing",
    "author": "marketing_event_automation developers",
    "website": "https://github.com/marketing-event-automation/marketing_event_automation",
    "license": "LGPL-3",
    "depends": ["mass_mailing", "mass_mailing_sms", "contacts", "phone_validation", "base_import"],
    "external_dependencies": {
        "python": ["jsonschema", "python-dateutil", "requests", "phonenumbers"],
    },
    "data": [
        "security/marketing_event_automation_security.xml",
        "security/ir.model.access.csv",
        "security/marketing_event_automation_rules.xml",
        "data/marketing_event_category_data.xml",
        "data/marketing_event_type_data.xml",
        "data/ir_cron_data.xml",
        "views/marketing_event_category_views.xml",
        "views/marketing_event_type_views.xml",
        "views/marketing_event_views.xml",
        "views/marketing_event_source_views.xml",
        "views/menus.xml",
    ],
    "demo": [
        "demo/marketing_event_demo.xml",
    ],
    "assets": {
        "web.assets_tests": ["marketing_event_automation/static/tests/tours/*.js"],
    },
    "application": True,
}
