from odoo.addons.mass_mailing.tests.common import MassMailCommon
from odoo.tests import tagged

from .common import MarketingAutomationCommon
from .test_mailing_trace_events import InternalEventsMixin


@tagged("post_install", "-at_install")
class TestListSubscriptionEvents(InternalEventsMixin, MarketingAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.newsletter, cls.offers, cls.events_list = cls.env["mailing.list"].create(
            [{"name": "Newsletter"}, {"name": "Offers"}, {"name": "Events"}]
        )

    def test_every_way_of_joining_or_leaving_a_list_is_logged(self):
        contact = self.env["mailing.contact"].create(
            {"name": "Alice", "email": "Alice@Example.com", "list_ids": [(4, self.newsletter.id)]}
        )
        subscribed = self.events("list_subscribed", self.partner)
        self.assertEqual(len(subscribed), 1)
        self.assertEqual(
            subscribed.params,
            {
                "list_id": self.newsletter.id,
                "list_name": "Newsletter",
                "mailing_contact_id": contact.id,
                "email": "alice@example.com",
            },
        )

        subscription = contact.subscription_ids
        subscription.opt_out = True
        unsubscribed = self.events("list_unsubscribed", self.partner)
        self.assertEqual(len(unsubscribed), 1)
        self.assertEqual(unsubscribed.params["list_id"], self.newsletter.id)
        self.assertIsNone(unsubscribed.params["reason"])
        subscription.opt_out = True
        self.assertEqual(len(self.events("list_unsubscribed", self.partner)), 1, "no change, no event")

        subscription.opt_out = False
        self.assertEqual(len(self.events("list_subscribed", self.partner)), 2, "withdrawing an opt-out subscribes")

        reason = self.env["mailing.subscription.optout"].create({"name": "Too many emails"})
        subscription.opt_out_reason_id = reason
        self.assertEqual(self.events("list_unsubscribed", self.partner)[-1].params["reason"], "Too many emails")

        self.offers.write({"contact_ids": [(4, contact.id)]})
        self.assertEqual(self.events("list_subscribed", self.partner)[-1].params["list_name"], "Offers")
        contact.write({"list_ids": [(3, self.offers.id)]})
        self.assertEqual(self.events("list_unsubscribed", self.partner)[-1].params["list_name"], "Offers")

        events_subscription = self.env["mailing.subscription"].create(
            {"contact_id": contact.id, "list_id": self.events_list.id}
        )
        self.assertEqual(self.events("list_subscribed", self.partner)[-1].params["list_name"], "Events")
        events_subscription.unlink()
        self.assertEqual(self.events("list_unsubscribed", self.partner)[-1].params["list_name"], "Events")
        self.assertEqual(len(self.events("list_subscribed", self.partner)), 4)
        self.assertEqual(len(self.events("list_unsubscribed", self.partner)), 4)

    def test_mailing_contacts_without_odoo_contact_are_skipped(self):
        self.env["mailing.list"].create(
            {
                "name": "Launch",
                "contact_ids": [
                    (0, 0, {"name": "Alice", "email": "alice@example.com"}),
                    (0, 0, {"name": "Nobody", "email": "nobody@example.com"}),
                ],
            }
        )
        subscribed = self.events("list_subscribed")
        self.assertEqual(subscribed.partner_id, self.partner)
        self.assertEqual(subscribed.params["list_name"], "Launch")

    def test_emission_is_batched(self):
        partners = self.env["res.partner"].create(
            [{"name": f"Reader {index}", "email": f"reader{index}@example.com"} for index in range(13)]
        )
        contacts = self.env["mailing.contact"].create(
            [{"name": partner.name, "email": partner.email} for partner in partners]
        )
        # The first list_subscribed events also teach the type its parameters
        # (one more statement, once): not what is measured here.
        self.newsletter.write({"contact_ids": [(4, contacts[12].id)]})
        query_counts = []
        for mailing_list, batch in ((self.offers, contacts[:2]), (self.events_list, contacts[2:12])):
            self.env.flush_all()
            self.env.invalidate_all()
            queries_before = self.env.cr.sql_log_count
            mailing_list.write({"contact_ids": [(4, contact.id) for contact in batch]})
            self.env.flush_all()
            query_counts.append(self.env.cr.sql_log_count - queries_before)
        self.assertEqual(len(self.events("list_subscribed").filtered(lambda event: event.partner_id in partners)), 13)
        self.assertGreater(query_counts[0], 0)
        self.assertEqual(query_counts[0], query_counts[1], "5 times more contacts, the same number of queries")

    def test_unsubscribe_link_logs_the_opt_out(self):
        self.env["mailing.contact"].create(
            {"name": "Alice", "email": "alice@example.com", "list_ids": [(4, self.newsletter.id)]}
        )
        # What the unsubscribe page of a mailing does.
        self.newsletter._update_subscription_from_email("alice@example.com", opt_out=True)
        unsubscribed = self.events("list_unsubscribed", self.partner)
        self.assertEqual(len(unsubscribed), 1)
        self.assertEqual(unsubscribed.params["list_name"], "Newsletter")


@tagged("post_install", "-at_install")
class TestSystemEvents(InternalEventsMixin, MarketingAutomationCommon, MassMailCommon):
    def import_csv(self, model, content, fields, dryrun=False, context=None):
        wizard = (
            self.env["base_import.import"]
            .with_context(**(context or {}))
            .create({"res_model": model, "file": content.encode(), "file_type": "text/csv"})
        )
        return wizard.execute_import(
            fields, fields, {"quoting": '"', "separator": ",", "has_headers": True}, dryrun=dryrun
        )

    def test_mailing_done_is_logged_once_with_its_counters(self):
        bob, carol = self.env["res.partner"].create(
            [{"name": "Bob", "email": "bob@example.com"}, {"name": "Carol", "email": "carol@example.com"}]
        )
        mailing = self.env["mailing.mailing"].create(
            {
                "subject": "Autumn news",
                "body_html": "<p>News</p>",
                "mailing_model_id": self.env["ir.model"]._get("res.partner").id,
                "mailing_domain": repr([("id", "in", (bob | carol).ids)]),
            }
        )
        mailing.action_put_in_queue()
        with self.mock_mail_gateway(mail_unlink_sent=False):
            mailing._process_mass_mailing_queue()
        self.assertEqual(mailing.state, "done")
        done = self.events("mailing_done")
        self.assertEqual(len(done), 1)
        self.assertEqual(done.scope, "system")
        self.assertFalse(done.partner_id)
        self.assertEqual(done.params["mailing_id"], mailing.id)
        self.assertEqual(done.params["name"], "Autumn news")
        self.assertEqual(done.params["model"], "res.partner")
        self.assertEqual(done.params["expected"], 2)
        self.assertEqual(done.params["sent"], 2)
        self.assertEqual(done.params["bounced"], 0)

        mailing.write({"state": "done"})
        self.assertEqual(len(self.events("mailing_done")), 1, "already done: no second event")

    def test_contact_file_import_is_logged_once_per_batch(self):
        content = "name,email\nImported One,imported1@example.com\nImported Two,imported2@example.com\n"
        result = self.import_csv("res.partner", content, ["name", "email"], dryrun=True)
        self.assertEqual(len(result["ids"]), 2)
        self.assertFalse(self.events("contacts_imported"), "a test import is rolled back with its events")

        result = self.import_csv("res.partner", content, ["name", "email"])
        self.assertFalse(result["messages"])
        imported = self.events("contacts_imported")
        self.assertEqual(len(imported), 1)
        self.assertEqual(imported.scope, "system")
        self.assertFalse(imported.partner_id)
        self.assertEqual(imported.params["model"], "res.partner")
        self.assertEqual(imported.params["count"], 2)
        self.assertEqual(imported.params["updated"], 0)
        self.assertEqual(sorted(imported.params["record_ids"]), sorted(result["ids"]))
        created = self.events("contact_created").filtered(lambda event: event.partner_id.id in result["ids"])
        self.assertEqual(len(created), 2)
        self.assertEqual({event.params["source"] for event in created}, {"import"})

    def test_mailing_contacts_imported_into_a_list(self):
        newsletter = self.env["mailing.list"].create({"name": "Newsletter"})
        content = "name,email\nAlice,alice@example.com\nZed,zed@example.com\n"
        self.import_csv("mailing.contact", content, ["name", "email"], context={"default_list_ids": [newsletter.id]})
        imported = self.events("contacts_imported")
        self.assertEqual(len(imported), 1)
        self.assertEqual(imported.params["model"], "mailing.contact")
        self.assertEqual(imported.params["count"], 2)
        self.assertEqual(imported.params["list_id"], newsletter.id)
        self.assertEqual(imported.params["list_name"], "Newsletter")
        self.assertEqual(self.events("list_subscribed").partner_id, self.partner, "Alice is a known contact")

    def test_pasted_contacts_imported_into_a_list(self):
        offers = self.env["mailing.list"].create({"name": "Offers"})
        self.env["mailing.contact.import"].create(
            {
                "mailing_list_ids": [(4, offers.id)],
                "contact_list": "Alice <alice@example.com>\nnew.reader@example.com\nalice@example.com",
            }
        ).action_import()
        imported = self.events("contacts_imported")
        self.assertEqual(len(imported), 1)
        self.assertEqual(imported.params["model"], "mailing.contact")
        self.assertEqual(imported.params["count"], 2)
        self.assertEqual(imported.params["list_names"], ["Offers"])
        self.assertEqual(self.events("list_subscribed").partner_id, self.partner)
