from datetime import datetime

from odoo.tests import tagged

from .common import MarketingAutomationCommon
from .common import MarketingAutomationHttpCommon


@tagged("post_install", "-at_install")
class TestEventTypeTour(MarketingAutomationHttpCommon):
    def test_marketer_filters_toggles_and_opens_row_actions(self):
        ecommerce = self.category_ecommerce
        tour_purchase, tour_signup, tour_archived, _tour_newsletter = self.EventType.create(
            [
                {"name": "Tour purchase", "key": "tour_purchase", "category_id": ecommerce.id},
                {"name": "Tour signup", "key": "tour_signup", "use_for_segmentation": True},
                {"name": "Tour archived", "key": "tour_archived", "active": False},
                {"name": "Tour newsletter", "key": "tour_newsletter"},
            ]
        )
        # Signing up launches the scenario, a purchase makes the contact leave it.
        scenario = self.env["marketing.scenario"].create(
            {
                "name": "Tour welcome",
                "trigger_type": "event",
                "trigger_event_type_id": tour_signup.id,
                "exit_event_type_ids": [(6, 0, tour_purchase.ids)],
                "timezone": "UTC",
            }
        )
        self.env["marketing.scenario.node"].create(
            {"scenario_id": scenario.id, "node_type": "wait", "wait_amount": 1, "wait_unit": "days"}
        )
        scenario.action_start()
        self.assertEqual(scenario.state, "running")
        self.Event._insert_events(
            [
                {
                    "type": tour_purchase,
                    "key": "tour_purchase",
                    "partner_id": self.partner.id,
                    "params": {"total": 59.9, "items": [{"sku": "SHOE-1", "quantity": 1}]},
                }
            ]
        )
        self.assertFalse(tour_purchase.use_for_segmentation)
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_event_type",
            "marketing_event_types_tour",
            login="mea_manager",  # a marketing administrator, not a superuser
        )
        tour_purchase.invalidate_recordset()
        self.assertTrue(tour_purchase.use_for_segmentation, "the switch of the row saved the type")
        self.assertTrue(tour_signup.use_for_segmentation)
        self.assertFalse(tour_archived.active)
        self.assertTrue(tour_purchase.exists(), "a type a running scenario depends on is not deleted")


@tagged("post_install", "-at_install")
class TestEventHistoryViews(MarketingAutomationCommon):
    def test_history_opens_in_list_pivot_and_graph(self):
        action = self.type_purchase.action_view_events()
        self.assertEqual(action["view_mode"], "list,pivot,graph,form")
        views = self.Event.with_user(self.marketing_user).get_views(
            [(False, "list"), (False, "pivot"), (False, "graph"), (False, "form"), (False, "search")]
        )["views"]
        self.assertIn('name="params_summary"', views["list"]["arch"])
        self.assertIn('name="params_readable"', views["form"]["arch"])
        self.assertRegex(views["pivot"]["arch"], r'name="type_id"[^>]*type="row"')
        self.assertRegex(views["pivot"]["arch"], r'name="received_at"[^>]*interval="day"')
        self.assertIn('name="received_at"', views["graph"]["arch"])
        for filter_name in ("filter_error", "filter_internal", "group_by_day"):
            self.assertIn(f'name="{filter_name}"', views["search"]["arch"])
        for field_name in ("type_id", "partner_id", "source_id"):
            self.assertIn(f'name="{field_name}"', views["search"]["arch"])

    def test_volume_per_type_per_day(self):
        self.Event._insert_events(
            [{"type": self.type_purchase, "key": "test_purchase", "partner_id": self.partner.id}] * 3
            + [{"type": self.type_cart, "key": "test_cart_abandoned", "partner_id": self.partner.id}]
        )
        groups = self.Event.with_user(self.marketing_user).read_group(
            [("type_id", "in", (self.type_purchase | self.type_cart).ids)],
            ["__count"],
            ["type_id", "received_at:day"],
            lazy=False,
        )
        counts = {group["type_id"][0]: group["__count"] for group in groups}
        self.assertEqual(counts, {self.type_purchase.id: 3, self.type_cart.id: 1})
        today = datetime.now().strftime("%d %b %Y")
        self.assertEqual({group["received_at:day"] for group in groups}, {today})

    def test_params_are_readable(self):
        [event_id] = self.Event._insert_events(
            [
                {
                    "type": self.type_purchase,
                    "key": "test_purchase",
                    "partner_id": self.partner.id,
                    "params": {"total": 59.9, "coupon": "WELCOME", "items": [{"sku": "SHOE-1", "quantity": 1}]},
                }
            ]
        )
        event = self.Event.browse(event_id)
        self.assertEqual(event.params_summary, 'coupon: WELCOME · items: [{"quantity":1,"sku":"SHOE-1"}] · total: 59.9')
        self.assertEqual(
            event.params_readable.splitlines(),
            ["coupon: WELCOME", "items[0].quantity: 1", "items[0].sku: SHOE-1", "total: 59.9"],
        )
        [long_id] = self.Event._insert_events(
            [{"type": self.type_purchase, "key": "test_purchase", "params": {"note": "x" * 500}}]
        )
        summary = self.Event.browse(long_id).params_summary
        self.assertEqual(len(summary), 160)
        self.assertTrue(summary.endswith("…"))
