from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon


@tagged("post_install", "-at_install")
class TestCouponListTour(MarketingAutomationHttpCommon, ScenarioCommon):
    def test_marketer_imports_codes_and_adds_the_node(self):
        scenario = self.create_scenario(name="Coupon tour")
        marketing_groups = self.marketing_user.groups_id.filtered(
            lambda group: (
                group.category_id
                == self.env.ref("marketing_event_automation.group_marketing_automation_user").category_id
            )
        )
        self.assertEqual(
            marketing_groups,
            self.env.ref("marketing_event_automation.group_marketing_automation_user"),
            "a marketer: the marketing-user group only, not its administrator",
        )
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_coupon_list",
            "marketing_coupon_list_tour",
            login=self.marketing_user.login,
        )
        coupon_list = self.env["marketing.coupon.list"].search([("name", "=", "Tour coupons")])
        self.assertEqual(sorted(coupon_list.coupon_ids.mapped("code")), ["TOUR-1", "TOUR-2"])
        self.assertEqual(coupon_list.create_uid, self.marketing_user)
        node = scenario.node_ids
        self.assertEqual((node.node_type, node.name, node.coupon_list_id), ("coupon", "Give the code", coupon_list))
        self.assertEqual(node.create_uid, self.marketing_user)
        self.assertEqual(scenario._check_ready(), [])
