from odoo.exceptions import AccessError
from odoo.exceptions import ValidationError
from odoo.tests import Form
from odoo.tests import tagged

from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEngagementAdjustAndAccess(MarketingAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Like every default internal user, both may edit contacts: only the
        # score itself is out of the salesperson's reach.
        contact_editors = cls.env.ref("base.group_partner_manager")
        (cls.sales_user | cls.marketing_user).write({"groups_id": [(4, contact_editors.id)]})
        cls.other = cls.env["res.partner"].create({"name": "Bob Browser"})
        cls.env["res.partner"]._marketing_change_score({cls.partner.id: 20}, "Visited the booth", "manual")

    def adjust(self, user, partners, points, reason):
        Wizard = self.env["marketing.engagement.adjust.wizard"].with_user(user)
        with Form(Wizard.with_context(active_model="res.partner", active_ids=partners.ids)) as form:
            form.points = points
            form.reason = reason
        return form.record.action_apply()

    def test_marketing_user_adjusts_scores_of_several_contacts(self):
        self.adjust(self.marketing_user, self.partner | self.other, -4, "  Asked to be called less  ")
        self.assertEqual((self.partner.engagement_score, self.other.engagement_score), (16, -4))
        log = self.other.engagement_log_ids
        self.assertEqual(
            (log.delta, log.score, log.reason, log.origin, log.origin_ref, log.create_uid),
            (-4, -4, "Asked to be called less", "manual", self.marketing_user, self.marketing_user),
        )
        wizard = self.env["marketing.engagement.adjust.wizard"].with_user(self.marketing_user)
        with self.assertRaisesRegex(ValidationError, "Points: give a number of points other than 0"):
            wizard.create({"partner_ids": self.partner.ids, "points": 0, "reason": "nothing"}).action_apply()
        with self.assertRaisesRegex(ValidationError, "Reason"):
            wizard.create({"partner_ids": self.partner.ids, "points": 1, "reason": "   "}).action_apply()

    def test_marketing_user_setting_a_score_is_logged(self):
        partner = self.partner.with_user(self.marketing_user)
        partner.write({"engagement_score": 35})
        self.assertEqual(self.partner.engagement_score, 35)
        log = self.partner.engagement_log_ids.sorted("id")[-1]
        self.assertEqual((log.delta, log.origin, log.origin_ref), (15, "manual", self.marketing_user))
        result = (
            self.env["res.partner"]
            .with_user(self.marketing_user)
            .with_context(import_file=True)
            .load(["name", "engagement_score"], [["Imported lead", "60"]])
        )
        self.assertFalse(result["messages"])
        imported = self.env["res.partner"].browse(result["ids"])
        self.assertEqual((imported.engagement_score, imported.engagement_score_band), (60, "hot"))
        self.assertEqual(imported.engagement_log_ids.mapped("origin"), ["import"])

    def test_sales_user_reads_but_cannot_change(self):
        partner = self.partner.with_user(self.sales_user)
        self.assertEqual(
            (partner.engagement_score, partner.engagement_score_set, partner.engagement_score_band), (20, True, "warm")
        )
        self.assertEqual(partner.engagement_log_count, 1)
        self.assertEqual(partner.engagement_log_ids.mapped("reason"), ["Visited the booth"])
        history = partner.action_view_engagement_history()
        self.assertEqual(
            self.env["marketing.engagement.log"].with_user(self.sales_user).search(history["domain"]).mapped("score"),
            [20],
        )
        partner.write({"function": "Buyer"})  # the rest of the contact stays editable
        with self.assertRaises(AccessError):
            partner.write({"engagement_score": 99})
        with self.assertRaises(AccessError):
            self.env["res.partner"].with_user(self.sales_user).create({"name": "Sneaky", "engagement_score": 99})
        with self.assertRaises(AccessError):
            self.env["marketing.engagement.log"].with_user(self.sales_user).create(
                {"partner_id": self.partner.id, "delta": 5, "score": 25, "reason": "Sneaky", "origin": "manual"}
            )
        with self.assertRaises(AccessError):
            partner.engagement_log_ids.write({"delta": 50})
        with self.assertRaises(AccessError):
            self.env["marketing.engagement.adjust.wizard"].with_user(self.sales_user).create(
                {"partner_ids": self.partner.ids, "points": 5, "reason": "Sneaky"}
            )
        with self.assertRaises(AccessError):
            self.env["marketing.engagement.rule"].with_user(self.sales_user).search([])
        self.assertEqual(self.partner.engagement_score, 20)

    def test_marketing_user_manages_rules(self):
        rule = (
            self.env["marketing.engagement.rule"]
            .with_user(self.marketing_user)
            .create({"name": "Purchase", "event_type_id": self.type_purchase.id, "points": 10})
        )
        rule.points = 12
        self.assertEqual(rule.company_id, self.company)

    def test_views_offer_changes_to_marketing_users_only(self):
        def form_arch(user):
            return self.env["res.partner"].with_user(user).get_views([(False, "form")])["views"]["form"]["arch"]

        sales_arch, marketing_arch = form_arch(self.sales_user), form_arch(self.marketing_user)
        for arch in (sales_arch, marketing_arch):
            self.assertIn('name="engagement_score"', arch)
            self.assertIn('name="action_view_engagement_history"', arch)
        self.assertNotIn("action_open_engagement_adjust", sales_arch)
        self.assertIn("action_open_engagement_adjust", marketing_arch)
        views = (
            self.env["res.partner"]
            .with_user(self.sales_user)
            .get_views([(False, "list"), (False, "kanban"), (False, "search")])["views"]
        )
        self.assertIn('name="engagement_score"', views["list"]["arch"])
        self.assertIn('name="engagement_score"', views["kanban"]["arch"])
        for filter_name in ("filter_engagement_hot", "filter_engagement_cold", "filter_engagement_never"):
            self.assertIn(f'name="{filter_name}"', views["search"]["arch"])
        self.assertIn("'group_by': 'engagement_score_band'", views["search"]["arch"])
        Partner = self.env["res.partner"].with_user(self.sales_user)
        never = Partner.create({"name": "Never scored"})
        self.assertIn(never, Partner.search([("engagement_score_set", "=", False)]))
        self.assertEqual(
            Partner.search([("engagement_score_band", "=", "warm"), ("id", "in", [self.partner.id, never.id])]),
            self.partner,
        )
        adjust_action = self.env.ref("marketing_event_automation.action_marketing_engagement_adjust_wizard")

        def bound_action_ids(user):
            bindings = self.env["ir.actions.actions"].with_user(user).get_bindings("res.partner")
            return [action["id"] for action in bindings.get("action", ())]

        self.assertNotIn(adjust_action.id, bound_action_ids(self.sales_user))
        self.assertIn(adjust_action.id, bound_action_ids(self.marketing_user))
        menus = self.env["ir.ui.menu"].with_user(self.sales_user)._visible_menu_ids()
        self.assertNotIn(self.env.ref("marketing_event_automation.menu_marketing_engagement_rule").id, menus)
