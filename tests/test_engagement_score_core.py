from odoo.tests import tagged

from ..utils.scores import score_domain
from ..utils.scores import score_matches
from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEngagementScoreCore(MarketingAutomationCommon):
    def test_change_score_is_logged_and_emits_an_event(self):
        other = self.env["res.partner"].create({"name": "Other"})
        self.assertFalse(self.partner.engagement_score_set, "never scored: empty, not 0")
        changes = self.env["res.partner"]._marketing_change_score(
            {self.partner.id: 5, other.id: -2}, "Opened an email", "rule"
        )
        self.assertEqual(changes, {self.partner.id: (None, 5), other.id: (None, -2)})
        changes = self.env["res.partner"]._marketing_change_score({self.partner.id: 3}, "Clicked", "manual")
        self.assertEqual(changes, {self.partner.id: (5, 8)})
        self.assertEqual((self.partner.engagement_score, self.partner.engagement_score_set), (8, True))
        logs = self.partner.engagement_log_ids.sorted("id")
        self.assertEqual([(log.delta, log.score_before, log.score) for log in logs], [(5, 0, 5), (3, 5, 8)])
        events = self.Event.search([("partner_id", "=", self.partner.id), ("type_id.key", "=", "score_changed")])
        self.assertEqual(sorted(event.params["new"] for event in events), [5, 8])
        self.assertIn(None, [event.params["old"] for event in events])

    def test_operators_treat_empty_apart(self):
        cases = [
            ("=", 5, 5, True),
            ("=", 5, None, False),
            ("!=", 5, 4, True),
            ("!=", 5, None, False),
            (">", 5, 6, True),
            (">", 5, 5, False),
            (">=", 5, 5, True),
            ("<", 5, 4, True),
            ("<", 5, None, False),
            ("<=", 5, 5, True),
            ("empty", 0, None, True),
            ("empty", 0, 0, False),
            ("not_empty", 0, 0, True),
            ("not_empty", 0, None, False),
        ]
        for operator, threshold, score, expected in cases:
            with self.subTest(operator=operator, score=score):
                self.assertEqual(score_matches(operator, threshold, score), expected)
        self.env["res.partner"]._marketing_change_score({self.partner.id: 7}, "test", "manual")
        Partner = self.env["res.partner"].with_context(active_test=False)
        self.assertIn(self.partner, Partner.search(score_domain(">=", 7)))
        self.assertNotIn(self.partner, Partner.search(score_domain("empty", 0)))
        never_scored = self.env["res.partner"].create({"name": "Never scored"})
        self.assertIn(never_scored, Partner.search(score_domain("empty", 0)))
        self.assertNotIn(never_scored, Partner.search(score_domain("<", 100)))
