from odoo.tests import HttpCase
from odoo.tests import TransactionCase
from odoo.tests import new_test_user


class MarketingAutomationCommon(TransactionCase):
    """Shared fixtures: users of each role, a shop source with a known write key, event types."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = cls.env(context=dict(cls.env.context, tracking_disable=True))
        cls.company = cls.env.company
        cls.company.country_id = cls.env.ref("base.be")
        cls.marketing_user = new_test_user(
            cls.env,
            login="mea_marketer",
            groups="base.group_user,marketing_event_automation.group_marketing_automation_user",
        )
        cls.marketing_manager = new_test_user(
            cls.env,
            login="mea_manager",
            groups="base.group_user,marketing_event_automation.group_marketing_automation_manager",
        )
        cls.sales_user = new_test_user(cls.env, login="mea_salesman", groups="base.group_user")
        cls.EventType = cls.env["marketing.event.type"]
        cls.Event = cls.env["marketing.event"]
        cls.source = cls.env["marketing.event.source"].create({"name": "Test shop"})
        cls.write_key = cls.source._generate_write_key()
        cls.category_ecommerce = cls.env.ref("marketing_event_automation.event_category_ecommerce")
        cls.type_purchase = cls.EventType.create(
            {"name": "Test purchase", "key": "test_purchase", "category_id": cls.category_ecommerce.id}
        )
        cls.type_cart = cls.EventType.create(
            {
                "name": "Test cart abandoned",
                "key": "test_cart_abandoned",
                "category_id": cls.category_ecommerce.id,
                "validate_params": True,
                "params_schema": """{
                    "type": "object",
                    "required": ["total", "items"],
                    "properties": {
                        "total": {"type": "number"},
                        "items": {"type": "array", "items": {
                            "type": "object", "required": ["sku"],
                            "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}}
                        }}
                    }
                }""",
            }
        )
        cls.partner = cls.env["res.partner"].create(
            {"name": "Alice Shopper", "email": "alice@example.com", "phone": "+32 470 12 34 56"}
        )


class MarketingAutomationHttpCommon(HttpCase, MarketingAutomationCommon):
    """HttpCase with the shared fixtures and helpers to call the event API."""

    def post_json(self, path, payload=None, key=None, data=None, headers=None):
        all_headers = {"Content-Type": "application/json"}
        if key is not False:
            all_headers["Authorization"] = f"Bearer {key or self.write_key}"
        all_headers.update(headers or {})
        if data is None:
            import json

            data = json.dumps(payload)
        return self.url_open(path, data=data, headers=all_headers, allow_redirects=False)
