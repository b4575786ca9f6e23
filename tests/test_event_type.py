import json
from datetime import timedelta

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from ..models.marketing_event_type import flatten_structure
from ..models.marketing_event_type import structure_example
from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEventType(MarketingAutomationCommon):
    def test_key_must_be_latin_letters_digits_and_separators(self):
        for bad_key in ("with space", "accentué", "semi;colon", ""):
            with self.subTest(key=bad_key), self.assertRaises(ValidationError) as caught:
                self.EventType.create({"name": "Bad", "key": bad_key})
            if bad_key:
                self.assertIn("Latin letters", str(caught.exception))
        event_type = self.EventType.create({"name": "Good", "key": "Order.completed-v2_1"})
        self.assertEqual(event_type.category_id, self.env.ref("marketing_event_automation.event_category_other"))

    def test_key_is_unique(self):
        with self.assertRaises(ValidationError) as caught:
            self.EventType.create({"name": "Again", "key": "test_purchase"})
        self.assertIn("already exists", str(caught.exception))

    def test_schema_is_checked_on_save(self):
        with self.assertRaises(ValidationError) as caught:
            self.type_purchase.write({"validate_params": True, "params_schema": "{not json"})
        self.assertIn("not valid JSON", str(caught.exception))
        with self.assertRaises(ValidationError) as caught:
            self.type_purchase.write({"validate_params": True, "params_schema": '{"type": "no-such-type"}'})
        self.assertIn("not a valid schema", str(caught.exception))
        with self.assertRaises(ValidationError):
            self.type_purchase.write({"validate_params": True, "params_schema": False})

    def test_params_errors_give_json_path_and_reason(self):
        errors = self.type_cart._params_errors({"total": "12", "items": [{"sku": "A"}, {"quantity": 2}]})
        self.assertEqual(
            errors,
            [
                "params.items[1]: 'sku' is a required property",
                "params.total: '12' is not of type 'number'",
            ],
        )
        self.assertEqual(self.type_cart._params_errors({"total": 3.5, "items": []}), [])
        self.assertEqual(self.type_purchase._params_errors({"anything": True}), [], "no schema, no validation")

    def test_structure_learning_adds_new_paths_and_keeps_known_ones(self):
        self.Event._insert_events(
            [
                {
                    "type": self.type_purchase,
                    "key": "test_purchase",
                    "partner_id": self.partner.id,
                    "params": {"total": 10, "items": [{"sku": "A", "price": 2.5}], "customer": {"city": "Namur"}},
                }
            ]
        )
        self.assertEqual(
            self.type_purchase.params_structure,
            {
                "total": "integer",
                "items": "array",
                "items[].sku": "string",
                "items[].price": "number",
                "customer": "object",
                "customer.city": "string",
            },
        )
        self.Event._insert_events(
            [
                {
                    "type": self.type_purchase,
                    "key": "test_purchase",
                    "partner_id": self.partner.id,
                    "params": {"total": "10", "coupon": "WELCOME"},
                }
            ]
        )
        self.assertEqual(self.type_purchase.params_structure["total"], "integer", "known paths keep their type")
        self.assertEqual(self.type_purchase.params_structure["coupon"], "string", "new paths are added")
        preview = json.loads(self.type_purchase.params_structure_preview)
        self.assertEqual(
            preview,
            {"coupon": "", "customer": {"city": ""}, "items": [{"price": 0.0, "sku": ""}], "total": 0},
        )
        self.assertIn("items[].sku: string", self.type_purchase.params_structure_paths)

    def test_structure_helpers_round_trip(self):
        params = {"a": [1, 2], "b": {"c": [{"d": None}]}, "e": True}
        structure = flatten_structure(params)
        self.assertEqual(
            structure,
            {"a": "array", "a[]": "integer", "b": "object", "b.c": "array", "b.c[].d": "null", "e": "boolean"},
        )
        self.assertEqual(structure_example(structure), {"a": [0], "b": {"c": [{"d": None}]}, "e": False})

    def test_lookup_by_key_follows_changes_of_the_types(self):
        """Types are looked up by key from a cache of each worker: every change of a key must show at once."""
        company = self.env.company
        self.assertEqual(
            self.EventType._get_by_keys(["test_purchase", "nope"], company), {"test_purchase": self.type_purchase}
        )
        own = self.EventType.create(
            {
                "name": "Our purchase",
                "key": "test_purchase",
                "company_id": company.id,
                "category_id": self.category_ecommerce.id,
            }
        )
        self.assertEqual(
            self.EventType._get_by_keys(["test_purchase"], company), {"test_purchase": own}, "the company's own wins"
        )
        own.key = "our_purchase"
        self.assertEqual(
            self.EventType._get_by_keys(["test_purchase", "our_purchase"], company),
            {"test_purchase": self.type_purchase, "our_purchase": own},
        )
        own.unlink()
        self.assertEqual(self.EventType._get_by_keys(["our_purchase"], company), {})
        self.type_purchase.active = False
        self.assertEqual(
            self.EventType._get_by_keys(["test_purchase"], company),
            {"test_purchase": self.type_purchase},
            "archived too",
        )

    def test_lookup_by_key_gives_a_user_only_the_types_of_the_companies_they_may_read(self):
        other = self.env["res.company"].create({"name": "Other company"})
        theirs = self.EventType.create(
            {
                "name": "Their purchase",
                "key": "their_purchase",
                "company_id": other.id,
                "category_id": self.category_ecommerce.id,
            }
        )
        self.assertEqual(self.EventType._get_by_keys(["their_purchase"], other), {"their_purchase": theirs})
        as_marketer = self.EventType.with_user(self.marketing_user)
        self.assertEqual(
            as_marketer._get_by_keys(["their_purchase", "test_purchase"], other), {"test_purchase": self.type_purchase}
        )

    def test_lookup_by_key_reads_the_types_in_one_query(self):
        keys = ["test_purchase", "test_cart_abandoned"]
        self.EventType._get_by_keys(keys, self.env.company)  # fills the cache
        self.env.invalidate_all()
        with self.assertQueryCount(1):
            found = self.EventType._get_by_keys(keys, self.env.company)
            self.assertTrue(
                all(event_type.active and event_type.params_schema is not None for event_type in found.values())
            )
        with self.assertQueryCount(1):
            self.assertEqual(self.EventType._get_by_keys(["unknown_key"], self.env.company), {})

    def test_counters_24h(self):
        with freeze_time(fields.Datetime.now() - timedelta(days=2)):
            self.Event._insert_events(
                [{"type": self.type_purchase, "key": "test_purchase", "partner_id": self.partner.id}]
            )
        self.Event._insert_events(
            [{"type": self.type_purchase, "key": "test_purchase", "partner_id": self.partner.id}] * 3
            + [{"type": self.type_purchase, "key": "test_purchase", "state": "rejected", "error_message": "bad"}]
        )
        self.type_purchase.invalidate_recordset()
        self.assertEqual(self.type_purchase.event_count_24h, 3)
        self.assertEqual(self.type_purchase.error_count_24h, 1)
        self.assertEqual(self.type_purchase.event_count, 5)

    def test_internal_types_exist_and_are_protected(self):
        keys = set(self.EventType.search([("is_internal", "=", True)]).mapped("key"))
        self.assertLessEqual(
            {
                "contact_created",
                "email_sent",
                "email_opened",
                "email_clicked",
                "email_replied",
                "email_bounced",
                "sms_sent",
                "sms_clicked",
                "sms_bounced",
                "list_subscribed",
                "list_unsubscribed",
                "score_changed",
                "scenario_completed",
                "mailing_done",
                "contacts_imported",
            },
            keys,
        )
        opened = self.env.ref("marketing_event_automation.event_type_email_opened")
        with self.assertRaises(ValidationError):
            opened.unlink()
        with self.assertRaises(ValidationError):
            opened.key = "email_open"

    def test_contact_creation_emits_an_internal_event(self):
        partner = self.env["res.partner"].create({"name": "New lead", "email": "lead@example.com"})
        event = self.Event.search([("partner_id", "=", partner.id)])
        self.assertEqual(event.type_id.key, "contact_created")
        self.assertEqual(event.state, "pending")
        self.assertFalse(event.source_id)

    def test_row_actions(self):
        action = self.type_purchase.action_view_events()
        self.assertEqual(action["res_model"], "marketing.event")
        self.assertEqual(action["domain"], [("type_id", "=", self.type_purchase.id)])
        self.assertEqual(self.type_purchase.action_structure_preview()["res_id"], self.type_purchase.id)
        self.assertEqual(self.type_purchase.action_open_validation()["target"], "new")
