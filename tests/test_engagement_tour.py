from odoo.tests import HttpCase
from odoo.tests import new_test_user
from odoo.tests import tagged

from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestEngagementScoreTour(HttpCase, MarketingAutomationCommon):
    def test_sales_user_sees_the_score_on_the_contact(self):
        salesperson = new_test_user(
            self.env,
            login="mea_tour_sales",
            password="mea_tour_sales_pw",
            groups="base.group_user,base.group_partner_manager",
        )
        self.env["res.partner"]._marketing_change_score({self.partner.id: 42}, "Visited the booth", "manual")
        self.start_tour(f"/odoo/contacts/{self.partner.id}", "marketing_engagement_score_tour", login=salesperson.login)
        self.assertFalse(salesperson.has_group("marketing_event_automation.group_marketing_automation_user"))
