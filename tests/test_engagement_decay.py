from datetime import timedelta

from freezegun import freeze_time

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEngagementDecay(MarketingAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Partner = cls.env["res.partner"]
        cls.start = fields.Datetime.now()
        cls.company.write({"engagement_decay_enabled": True, "engagement_decay_points": 5, "engagement_decay_days": 30})
        cls.inactive, cls.low, cls.active_one, cls.never = cls.Partner.create(
            [{"name": "Inactive"}, {"name": "Low"}, {"name": "Active"}, {"name": "Never scored"}]
        )
        cls.other_company = cls.env["res.company"].create({"name": "No decay company"})
        cls.other_contact = cls.Partner.create({"name": "Other company contact", "company_id": cls.other_company.id})
        cls.Partner._marketing_change_score(
            {cls.inactive.id: 12, cls.low.id: 3, cls.active_one.id: 20, cls.other_contact.id: 20}, "Initial", "manual"
        )

    def decay(self, days, batch_size=1000):
        with freeze_time(self.start + timedelta(days=days)):
            return self.Partner._cron_marketing_score_decay(batch_size=batch_size)

    def scores(self):
        return [
            partner.engagement_score if partner.engagement_score_set else None
            for partner in (self.inactive, self.low, self.active_one, self.never, self.other_contact)
        ]

    def test_decay_after_days_without_events(self):
        with freeze_time(self.start + timedelta(days=20)):
            self.Event._emit("email_clicked", [{"partner_id": self.active_one.id}])
            # Emails sent to a contact are not activity of the contact.
            self.Event._emit("email_sent", [{"partner_id": self.inactive.id}])
        self.assertEqual(self.decay(29), 0, "nobody is inactive for 30 days yet")
        self.assertEqual(self.decay(31), 2)
        self.assertEqual(self.scores(), [7, 0, 20, None, 20], "never below 0, never scored stays empty")
        decay_log = self.inactive.engagement_log_ids.filtered(lambda log: log.origin == "decay")
        self.assertEqual((decay_log.delta, decay_log.score_before, decay_log.score), (-5, 12, 7))
        self.assertEqual(decay_log.reason, "Decay: 30 days without activity")

        self.assertEqual(self.decay(31.5), 0, "decays once per window")
        self.assertEqual(self.decay(45), 0)
        self.assertEqual(self.decay(51), 1, "30 days after its last click, the active contact decays too")
        self.assertEqual(self.decay(62), 1)
        self.assertEqual(self.scores(), [2, 0, 15, None, 20])
        score_events = self.Event.search([("partner_id", "=", self.inactive.id), ("type_id.key", "=", "score_changed")])
        self.assertEqual([event.params["origin"] for event in score_events.sorted("id")], ["manual", "decay", "decay"])

    def test_decay_runs_in_batches(self):
        self.other_company.write(
            {"engagement_decay_enabled": True, "engagement_decay_points": 1, "engagement_decay_days": 30}
        )
        self.assertEqual(self.decay(31, batch_size=2), 2)
        self.assertEqual(self.decay(31, batch_size=2), 2)
        self.assertEqual(self.decay(31, batch_size=2), 0)
        self.assertEqual(self.scores(), [7, 0, 15, None, 19], "each company decays its contacts its own way")

    def test_decay_cron_job(self):
        cron = self.env.ref("marketing_event_automation.ir_cron_engagement_decay")
        self.assertEqual((cron.interval_number, cron.interval_type, cron.active), (1, "days", True))
        with freeze_time(self.start + timedelta(days=31)):
            cron.method_direct_trigger()
        self.assertEqual(self.scores(), [7, 0, 15, None, 20])

    def test_decay_settings(self):
        settings = self.env["res.config.settings"].create({})
        self.assertTrue(settings.engagement_decay_enabled)
        settings.engagement_decay_points = 2
        settings.execute()
        self.assertEqual(self.company.engagement_decay_points, 2)
        with self.assertRaisesRegex(ValidationError, "Decay After"):
            self.company.engagement_decay_days = 0
        self.company.engagement_decay_enabled = False
        self.assertEqual(self.decay(100), 0)
