import hashlib
import hmac
import json
from datetime import timedelta
from unittest.mock import patch

from odoo.addons.mail.tests.common import MockEmail
from odoo.addons.sms.tests.common import SMSCase
from odoo.tests import tagged
from odoo.tools import SQL

from ..models import marketing_event_source
from .scenario_common import ScenarioCommon

MODULE = "marketing_event_automation"


@tagged("post_install", "-at_install")
class TestContactDeletion(ScenarioCommon):
    """Deleting a contact deletes what the module knows about it: events, runs, steps, score history."""

    def test_every_link_to_a_contact_cascades_in_the_database(self):
        fields_to_partner = self.env["ir.model.fields"].search(
            [
                ("relation", "=", "res.partner"),
                ("ttype", "=", "many2one"),
                ("store", "=", True),
                ("model_id", "in", self.own_model_ids()),
            ]
        )
        self.assertTrue(fields_to_partner)
        for field in fields_to_partner:
            with self.subTest(model=field.model, field=field.name):
                self.assertEqual(field.on_delete, "cascade")
                table = self.env[field.model]._table
                self.env.cr.execute(
                    """
                    SELECT c.confdeltype
                      FROM pg_constraint c
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
                     WHERE c.contype = 'f' AND c.conrelid = %s::regclass AND a.attname = %s
                    """,
                    [table, field.name],
                )
                self.assertEqual(self.env.cr.fetchall(), [("c",)], "ON DELETE CASCADE in the database")

    def own_model_ids(self):
        return [
            model.id
            for model in self.env["ir.model"].search([])
            if model.model in self.env and type(self.env[model.model])._original_module == MODULE
        ]

    def test_unlinking_a_contact_removes_its_marketing_data(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait", wait_amount=2, wait_unit="days")
        scenario.action_start()
        automation = self.env["marketing.system.automation"].create(
            {
                "name": "On import",
                "event_type_id": self.env.ref("marketing_event_automation.event_type_contacts_imported").id,
                "job_ids": [(0, 0, {"job_type": "send_report"})],
            }
        )
        for partner in (self.partner, self.bob):
            self.emit(self.type_cart, partner, {"total": 5.0, "items": [{"sku": "A"}]})
        self.env["res.partner"]._marketing_change_score({self.partner.id: 4, self.bob.id: 4}, "Booth", "manual")
        [system_event_id] = self.Event._emit("contacts_imported", [{"params": {"count": 1}}])
        self.dispatch()
        alice = self.participant_of(scenario, self.partner)
        self.assertTrue(alice.step_ids)
        wizard = self.env["marketing.scenario.test.wizard"].create(
            {"scenario_id": scenario.id, "partner_id": self.partner.id}
        )
        alice_events = self.Event.search([("partner_id", "=", self.partner.id)])
        self.assertGreaterEqual(len(alice_events), 3, "the cart, contact creation and score change events")
        alice_data = [alice_events, alice, alice.step_ids, self.partner.engagement_log_ids, wizard]
        bob_data = [
            self.Event.search([("partner_id", "=", self.bob.id)]),
            self.participant_of(scenario, self.bob),
            self.bob.engagement_log_ids,
        ]

        self.partner.unlink()

        for records in alice_data:
            with self.subTest(model=records._name):
                self.assertFalse(records.exists())
        self.env.cr.execute("SELECT count(*) FROM marketing_event WHERE params::text LIKE %s", ["%alice@example.com%"])
        self.assertEqual(self.env.cr.fetchone()[0], 0, "no event keeps the contact's address")
        for records in bob_data:
            with self.subTest(model=records._name):
                self.assertTrue(records.exists(), "the other contacts keep theirs")
        self.assertEqual(automation.run_ids.event_id.id, system_event_id, "system events are about no contact and stay")


@tagged("post_install", "-at_install")
class TestConsent(ScenarioCommon, SMSCase, MockEmail):
    """Blacklisted and opted-out contacts receive nothing from a scenario, whenever they said so."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Partner = cls.env["res.partner"]
        cls.willing = Partner.create({"name": "Willing", "email": "willing@example.com", "mobile": "+32470000001"})
        cls.blacklisted = Partner.create({"name": "Listed", "email": "listed@example.com", "mobile": "+32470000002"})
        cls.opted_out = Partner.create({"name": "Left", "email": "left@example.com", "mobile": "+32470000003"})
        cls.late = Partner.create({"name": "Late", "email": "late@example.com", "mobile": "+32470000004"})
        cls.half = Partner.create({"name": "Half", "email": "half@example.com", "mobile": "+32470000005"})
        cls.newsletter = cls.env["mailing.list"].create({"name": "Newsletter"})
        cls.offers = cls.env["mailing.list"].create({"name": "Offers"})
        Contact = cls.env["mailing.contact"]
        # Left every list it was on: opted out.
        Contact.create(
            {
                "name": "Left",
                "email": "left@example.com",
                "mobile": "+32470000003",
                "subscription_ids": [
                    (0, 0, {"list_id": cls.newsletter.id, "opt_out": True}),
                    (0, 0, {"list_id": cls.offers.id, "opt_out": True}),
                ],
            }
        )
        # Left one list, still on the other: not opted out.
        Contact.create(
            {
                "name": "Half",
                "email": "half@example.com",
                "mobile": "+32470000005",
                "subscription_ids": [
                    (0, 0, {"list_id": cls.newsletter.id, "opt_out": True}),
                    (0, 0, {"list_id": cls.offers.id, "opt_out": False}),
                ],
            }
        )
        cls.everybody = cls.willing | cls.blacklisted | cls.opted_out | cls.late | cls.half

    def run_message_scenario(self, node_type, blacklist_before, blacklist_after):
        """Enter everybody, wait a day, send; blacklist before entering and during the wait."""
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        message = self.add_node(scenario, node_type, wait, name="Come back")
        if node_type == "email":
            message.mailing_id.write({"subject": "Come back", "body_html": "<p>Your cart</p>"})
        else:
            message.mailing_id.write({"body_plaintext": "Your cart awaits", "sms_allow_unsubscribe": False})
        blacklist_before()
        scenario.action_start()
        for partner in self.everybody:
            self.emit(self.type_cart, partner, {"total": 10.0, "items": [{"sku": "A"}]})
        self.dispatch()
        self.advance()
        self.assertEqual(len(scenario.participant_ids), 5, "entering is fine: sending is what consent forbids")
        blacklist_after()
        return message

    def step_results(self, node):
        return {step.partner_id: (step.state, step.result) for step in self.Step.search([("node_id", "=", node.id)])}

    def test_email(self):
        with self.mock_mail_gateway():
            email = self.run_message_scenario(
                "email",
                lambda: self.env["mail.blacklist"]._add("listed@example.com"),
                lambda: self.env["mail.blacklist"]._add("late@example.com"),
            )
            self.advance_at(self.now() + timedelta(days=1, minutes=1))
            self.env["mail.mail"].sudo().process_email_queue()
        results = self.step_results(email)
        self.assertEqual(results[self.willing], ("done", "Sent"))
        self.assertEqual(results[self.half], ("done", "Sent"))
        self.assertEqual(results[self.blacklisted], ("skipped", "Blacklisted Address"))
        self.assertEqual(results[self.late], ("skipped", "Blacklisted Address"))
        self.assertEqual(results[self.opted_out], ("skipped", "Opted out of the mailing lists"))
        received = {
            address
            for mail in self._mails
            for to in mail["email_to"]
            for address in self.everybody.mapped("email")
            if address in to
        }
        self.assertEqual(received, {"willing@example.com", "half@example.com"})

    def test_sms(self):
        Blacklist = self.env["phone.blacklist"]
        with self.mockSMSGateway():
            sms = self.run_message_scenario(
                "sms", lambda: Blacklist._add(["+32470000002"]), lambda: Blacklist._add(["+32470000004"])
            )
            self.advance_at(self.now() + timedelta(days=1, minutes=1))
            self.env["sms.sms"].sudo()._process_queue()
        results = self.step_results(sms)
        self.assertEqual(results[self.willing], ("done", "Sent"))
        self.assertEqual(results[self.half], ("done", "Sent"))
        self.assertEqual(results[self.blacklisted], ("skipped", "Blacklisted"))
        self.assertEqual(results[self.late], ("skipped", "Blacklisted"))
        self.assertEqual(results[self.opted_out], ("skipped", "Opted out of the mailing lists"))
        self.assertEqual(sorted(sms["number"] for sms in self._sms), ["+32470000001", "+32470000005"])

    def test_list_add_respects_an_opt_out_of_that_list(self):
        scenario = self.create_scenario()
        node = self.add_node(scenario, "list_add", mailing_list_id=self.newsletter.id)
        scenario.action_start()
        for partner in (self.willing, self.half):
            self.emit(self.type_cart, partner, {"total": 10.0, "items": [{"sku": "A"}]})
        self.dispatch()
        self.advance()
        results = self.step_results(node)
        self.assertEqual(results[self.willing], ("done", "Newsletter"))
        self.assertEqual(results[self.half], ("skipped", "Opted out of this list"))
        subscription = self.newsletter.subscription_ids.filtered(lambda sub: sub.contact_id.email == "half@example.com")
        self.assertTrue(subscription.opt_out, "still opted out")


@tagged("post_install", "-at_install")
class TestWriteKeyStorage(ScenarioCommon):
    def test_database_holds_no_plaintext_key(self):
        action = self.source.action_rotate_key()
        write_key = self.env[action["res_model"]].with_context(**action["context"]).browse(action["res_id"]).write_key
        secret = write_key.split("_", 2)[2]
        self.env.flush_all()
        for table in ("marketing_event_source", "marketing_event_source_key_wizard"):
            with self.subTest(table=table):
                self.env.cr.execute(SQL("SELECT row_to_json(t)::text FROM %s t", SQL.identifier(table)))
                rows = [row[0] for row in self.env.cr.fetchall()]
                self.assertTrue(rows)
                self.assertFalse([row for row in rows if secret in row or write_key in row])
        stored = json.dumps(self.source.sudo().read(["key_id", "key_hash"])[0])
        self.assertNotIn(secret, stored)
        self.assertEqual(self.source.sudo().key_hash, hashlib.sha256(secret.encode()).hexdigest())

    def test_secret_is_compared_in_constant_time(self):
        calls = []
        real_compare_digest = hmac.compare_digest

        def compare_digest(left, right):
            calls.append((left, right))
            return real_compare_digest(left, right)

        # A spy on the standard library, not on Odoo: the comparison still happens.
        with patch.object(marketing_event_source.hmac, "compare_digest", side_effect=compare_digest):
            Source = self.env["marketing.event.source"]
            self.assertEqual(Source._authenticate(self.write_key), self.source)
            self.assertFalse(Source._authenticate(self.write_key[:-1] + ("A" if self.write_key[-1] != "A" else "B")))
        secret = self.write_key.split("_", 2)[2]
        stored = self.source.sudo().key_hash
        self.assertEqual(len(calls), 2)
        self.assertEqual(calls[0], (stored, hashlib.sha256(secret.encode()).hexdigest()))
        self.assertEqual(calls[1][0], stored)
