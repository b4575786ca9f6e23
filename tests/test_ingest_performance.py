from odoo import tools
from odoo.addons.marketing_event_automation.utils.payload import normalize_email
from odoo.tests import tagged

from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestIngestPerformance(MarketingAutomationCommon):
    """The ingestion path stays cheap: bulk contacts, constant queries, one dispatcher wake-up."""

    def batch(self, count, tag):
        """``count`` events, a third of them from contacts nobody knows yet."""
        events = []
        for index in range(count):
            if index % 3 == 2:
                contact = {"email": f"new-{tag}-{index}@example.com", "name": f"New {index}"}
            else:
                contact = {"email": "alice@example.com"}
            event = {"event": "test_purchase", "event_id": f"{tag}-{index}", "contact": contact}
            if index % 2:
                event |= {"event": "test_cart_abandoned", "params": {"total": 10.5, "items": [{"sku": "A"}]}}
            events.append(event)
        return events

    def ingest(self, events):
        Event = self.Event.sudo().with_company(self.source.company_id)
        results = Event._ingest(self.source, events)
        self.assertEqual({result["status"] for result in results}, {"accepted"})
        return results

    def test_queries_per_batch_do_not_grow_with_its_size(self):
        self.ingest(self.batch(6, "warm-up"))  # caches of types and company loaded
        self.env.flush_all()
        query_counts = []
        for count in (10, 100):
            self.env.invalidate_all()
            queries_before = self.env.cr.sql_log_count
            self.ingest(self.batch(count, f"size-{count}"))
            self.env.flush_all()
            query_counts.append(self.env.cr.sql_log_count - queries_before)
        self.assertGreater(query_counts[0], 0)
        self.assertEqual(query_counts[0], query_counts[1], "10 times more events and new contacts, the same queries")

    def test_bulk_created_contacts_equal_contacts_created_by_create(self):
        Partner = self.env["res.partner"].sudo()
        values_list = [
            {"name": "Ann", "email": "ann@example.com", "phone": False, "marketing_external_id": False},
            {"name": "+32470112233", "email": False, "phone": "+32470112233", "marketing_external_id": False},
            {"name": "shop-7", "email": False, "phone": False, "marketing_external_id": "shop-7"},
        ]
        values_list = [dict(values, company_id=self.company.id) for values in values_list]
        bulk = (
            self.env["marketing.event.ingestion"]
            .sudo()
            ._marketing_create_contacts([dict(values) for values in values_list])
        )
        created = Partner.with_context(mail_create_nolog=True, mail_create_nosubscribe=True).create(values_list)
        self.env.flush_all()
        self.env.invalidate_all()
        compared = [
            name
            for name, field in Partner._fields.items()
            if field.store and field.column_type
            if name not in ("id", "commercial_partner_id", "create_date", "write_date")
        ]
        self.assertIn("email_normalized", compared)
        self.assertIn("lang", compared)
        for bulk_partner, partner in zip(bulk, created):
            with self.subTest(name=partner.name):
                self.assertEqual(bulk_partner.commercial_partner_id, bulk_partner)
                self.assertEqual(
                    {name: bulk_partner[name] for name in compared}, {name: partner[name] for name in compared}
                )
                self.assertEqual(bulk_partner.display_name, partner.display_name)
        contact_created = self.Event.search([("type_id.key", "=", "contact_created"), ("partner_id", "in", bulk.ids)])
        self.assertEqual(contact_created.partner_id, bulk, "one contact_created event per bulk-created contact")
        self.assertEqual(contact_created.mapped("params"), [{"source": "odoo"}] * 3)
        self.assertEqual(contact_created.company_id, self.company)

    def test_one_dispatcher_wake_up_per_transaction(self):
        dispatcher = self.env.ref("marketing_event_automation.ir_cron_dispatch_events")
        self.env.cr.flush()
        triggers_before = self.env["ir.cron.trigger"].search_count([("cron_id", "=", dispatcher.id)])
        self.ingest(self.batch(9, "wake"))  # the events and the contact_created events of 3 new contacts
        self.Event._emit("email_opened", [{"partner_id": self.partner.id}])
        self.env.cr.flush()  # runs the pre-commit hooks, as the commit does
        triggers = self.env["ir.cron.trigger"].search_count([("cron_id", "=", dispatcher.id)])
        self.assertEqual(triggers, triggers_before + 1)

    def test_fast_email_normalization_agrees_with_odoo(self):
        addresses = [
            "Alice@Example.com",
            "first.last+tag@sub.example.co.uk",
            "under_score%x-y@ex-ample.org",
            "a..b@example.com",
            ".lead@example.com",
            "trail.@example.com",
            "Name <name@example.com>",
            '"quoted"@example.com',
            "two@example.com, three@example.com",
            "no-at-sign",
            "@example.com",
            "a@b",
            "ünïcode@example.com",
            "\u017f@example.com",  # long s: uppercases to an ASCII S
            "spaced name@example.com",
            "a@exa_mple.com",
        ]
        for address in addresses:
            with self.subTest(address=address):
                self.assertEqual(normalize_email(address), tools.email_normalize(address))
