from datetime import datetime

from freezegun import freeze_time

from odoo.exceptions import AccessError
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

T0 = datetime(2026, 11, 2, 10, 0, 0)


@tagged("post_install", "-at_install")
class TestScenarioFlowData(ScenarioCommon):
    """marketing.scenario.get_flow_data: what the flow canvas of the form draws."""

    def build_tree(self, scenario):
        condition = self.add_node(
            scenario,
            "condition",
            name="Is Alice?",
            condition_type="domain",
            condition_domain="[('email', 'ilike', 'alice')]",
        )
        vip = self.add_node(scenario, "tag_add", condition, branch="yes", tag_ids=[(6, 0, self.tag_vip.ids)])
        wait = self.add_node(scenario, "wait", condition, branch="no", wait_amount=3, wait_unit="days")
        split = self.add_node(scenario, "split", wait)
        arm_a = self.add_node(
            scenario, "tag_add", split, branch="arm", split_weight=70, tag_ids=[(6, 0, self.tag_lost.ids)]
        )
        arm_b = self.add_node(scenario, "exit", split, branch="arm", split_weight=30)
        return condition, vip, wait, split, arm_a, arm_b

    def cards_by_id(self, data):
        return {card["id"]: card for card in data["nodes"]}

    def test_trigger_and_tree_with_branches_and_arms(self):
        scenario = self.create_scenario(
            name="Cart recovery",
            trigger_params_filter="total > 100",
            entry_policy="once",
            exit_event_type_ids=[(6, 0, self.type_purchase.ids)],
        )
        condition, vip, wait, split, arm_a, arm_b = self.build_tree(scenario)
        data = scenario.with_user(self.marketing_user).get_flow_data()
        self.assertEqual(
            data["scenario"], {"id": scenario.id, "name": "Cart recovery", "state": "draft", "state_label": "Draft"}
        )
        self.assertTrue(data["can_edit"])
        self.assertFalse(data["locked_reason"])
        trigger = data["trigger"]
        self.assertEqual((trigger["type"], trigger["label"], trigger["icon"]), ("event", "On event", "fa-bolt"))
        self.assertEqual(trigger["summary"], "Test cart abandoned")
        self.assertEqual(trigger["details"], ["total > 100", "Entry: Once ever", "Exits on Test purchase"])
        self.assertEqual([stat["name"] for stat in trigger["stats"]], ["entered", "active", "completed", "exited"])

        cards = self.cards_by_id(data)
        self.assertEqual(set(cards), {condition.id, vip.id, wait.id, split.id, arm_a.id, arm_b.id})
        self.assertEqual(
            {card["id"]: (card["parent_id"], card["branch"]) for card in data["nodes"]},
            {
                condition.id: (False, "always"),
                vip.id: (condition.id, "yes"),
                wait.id: (condition.id, "no"),
                split.id: (wait.id, "always"),
                arm_a.id: (split.id, "arm"),
                arm_b.id: (split.id, "arm"),
            },
        )
        self.assertEqual(cards[condition.id]["name"], "Is Alice?")
        self.assertEqual(cards[condition.id]["kind"], "condition")
        self.assertEqual(cards[condition.id]["icon"], "fa-code-fork")
        self.assertIn("alice", cards[condition.id]["description"])
        self.assertEqual(cards[vip.id]["name"], "Add tags", "a node without a name is called by its type")
        self.assertEqual(cards[vip.id]["description"], "VIP")
        self.assertEqual(cards[wait.id]["description"], "3 days")
        self.assertEqual(cards[split.id]["description"], "2 arms, weighted")
        self.assertEqual((cards[arm_a.id]["split_weight"], cards[arm_b.id]["split_weight"]), (70, 30))
        self.assertEqual(cards[arm_b.id]["description"], "The contact leaves the scenario")
        self.assertEqual([stat["name"] for stat in cards[condition.id]["stats"]], ["yes", "no"])
        self.assertEqual([stat["name"] for stat in cards[wait.id]["stats"]], ["scheduled", "processed"])
        self.assertEqual([stat["name"] for stat in cards[vip.id]["stats"]], ["processed"])

    def test_statistics_are_live(self):
        scenario = self.create_scenario()
        condition, vip, wait, _split, _arm_a, _arm_b = self.build_tree(scenario)
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.emit(self.type_cart, self.bob, {"total": 1, "items": []})
            self.dispatch()
            self.advance()
        data = scenario.get_flow_data()

        def stats(node):
            return {stat["name"]: stat["value"] for stat in self.cards_by_id(data)[node.id]["stats"]}

        self.assertEqual(stats(condition), {"yes": 1, "no": 1}, "Alice goes down Yes, Bob down No")
        self.assertEqual(stats(vip), {"processed": 1})
        self.assertEqual(stats(wait), {"scheduled": 1, "processed": 0}, "Bob waits three days")
        trigger_stats = {stat["name"]: stat["value"] for stat in data["trigger"]["stats"]}
        self.assertEqual(trigger_stats, {"entered": 2, "active": 1, "completed": 1, "exited": 0})

    def test_email_card_shows_message_statistics(self):
        scenario = self.create_scenario()
        email = self.add_node(scenario, "email", name="Reminder")
        email.mailing_id.subject = "You forgot something"
        card = self.cards_by_id(scenario.get_flow_data())[email.id]
        self.assertEqual(card["description"], "You forgot something")
        self.assertEqual([stat["name"] for stat in card["stats"]], ["sent", "opened", "clicked"])

    def test_running_scenario_is_locked_with_the_engine_reason(self):
        scenario = self.create_scenario(name="Locked")
        self.add_node(scenario, "wait")
        scenario.action_start()
        data = scenario.with_user(self.marketing_user).get_flow_data()
        self.assertFalse(data["can_edit"])
        self.assertIn("Pause Locked before changing its nodes", data["locked_reason"])
        scenario.action_pause()
        data = scenario.with_user(self.marketing_user).get_flow_data()
        self.assertTrue(data["can_edit"])
        self.assertEqual(data["scenario"]["state_label"], "Paused")

    def test_archived_nodes_are_drawn_muted(self):
        scenario = self.create_scenario()
        wait = self.add_node(scenario, "wait")
        wait.action_archive()
        [card] = scenario.get_flow_data()["nodes"]
        self.assertEqual(card["id"], wait.id)
        self.assertFalse(card["active"])

    def test_marketing_users_only(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "wait")
        self.assertEqual(len(scenario.with_user(self.marketing_manager).get_flow_data()["nodes"]), 1)
        with self.assertRaises(AccessError):
            scenario.with_user(self.sales_user).get_flow_data()

    def test_other_company_scenario_is_refused(self):
        other_company = self.env["res.company"].create({"name": "Other shop"})
        scenario = self.create_scenario(company_id=other_company.id)
        with self.assertRaises(AccessError):
            scenario.with_user(self.marketing_user).get_flow_data()

    def chain_of(self, rounds):
        """A scenario whose nodes of eight kinds follow one another, ``rounds`` times over."""
        scenario = self.create_scenario(name=f"Chain of {rounds} rounds")
        mailing_list = self.env["mailing.list"].create({"name": "Newsletter"})
        kinds = [
            ("tag_add", {"tag_ids": [(6, 0, self.tag_vip.ids)]}),
            ("score", {"score_delta": 5, "score_reason": "Engaged"}),
            ("email", {}),
            ("list_add", {"mailing_list_id": mailing_list.id}),
            ("wait", {"wait_amount": 2, "wait_unit": "hours"}),
            ("condition", {"condition_type": "event", "condition_event_type_id": self.type_purchase.id}),
            ("wait_event", {"wait_event_type_id": self.type_purchase.id, "wait_amount": 1}),
            ("activity", {"activity_type_id": self.env.ref("mail.mail_activity_data_todo").id}),
        ]
        parent = None
        for index in range(rounds * len(kinds)):
            node_type, values = kinds[index % len(kinds)]
            branch = "yes" if parent and parent.node_type in ("condition", "wait_event") else "always"
            parent = self.add_node(scenario, node_type, parent, branch=branch, **values)
            if node_type == "email":
                parent.mailing_id.write({"subject": "Your cart", "body_html": "<p>Come back</p>"})
        scenario.action_start()
        with freeze_time(T0):
            self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
            self.dispatch()
            self.advance()
        return scenario

    def queries_of_flow_data(self, scenario):
        scenario = scenario.with_user(self.marketing_user)
        self.env.invalidate_all()
        before = self.env.cr.sql_log_count
        data = scenario.get_flow_data()
        return self.env.cr.sql_log_count - before, data

    def test_query_count_does_not_grow_with_nodes(self):
        small, large = self.chain_of(1), self.chain_of(5)
        # Warm the caches that do not depend on the scenario (ir.model.fields, translations...).
        self.queries_of_flow_data(small)
        small_count, small_data = self.queries_of_flow_data(small)
        large_count, large_data = self.queries_of_flow_data(large)
        self.assertEqual((len(small_data["nodes"]), len(large_data["nodes"])), (8, 40))
        self.assertEqual(large_count, small_count, "40 nodes cost the queries of 8")


@tagged("post_install", "-at_install")
class TestScenarioFlowTour(MarketingAutomationHttpCommon, ScenarioCommon):
    def test_marketer_builds_on_the_abandoned_cart_template_on_the_canvas_starts_and_pauses_it(self):
        template = self.env.ref("marketing_event_automation.scenario_template_abandoned_cart")
        # The demo data may hold a scenario of the same template: look at the tour's own.
        existing = self.Scenario.search([("template_id", "=", template.id)])
        self.start_tour(
            "/odoo/action-marketing_event_automation.action_marketing_scenario",
            "marketing_scenario_flow_tour",
            login=self.marketing_user.login,
        )
        scenario = self.Scenario.search([("template_id", "=", template.id), ("id", "not in", existing.ids)])
        self.assertEqual(len(scenario), 1)
        self.assertEqual(scenario.state, "paused")
        self.assertEqual(scenario.trigger_event_type_id.key, "cart_abandoned")
        nodes = {node.name: node for node in scenario.node_ids}
        coupon, wait, condition = nodes["Cart coupon"], nodes["Wait a day"], nodes["Still interested?"]
        tag = scenario.node_ids.filtered(lambda node: node.node_type == "tag_add")
        self.assertEqual((wait.node_type, wait.parent_id, wait.branch), ("wait", coupon, "always"))
        self.assertEqual((wait.wait_amount, wait.wait_unit), (1, "days"))
        self.assertEqual((condition.node_type, condition.parent_id, condition.branch), ("condition", wait, "always"))
        self.assertEqual((tag.parent_id, tag.branch, tag.tag_ids), (condition, "yes", self.tag_vip))
        # The template gained its Give a coupon node before the coupon email (issue 21): five nodes, not four.
        self.assertEqual(len(scenario.node_ids), 8, "the template's five nodes and the three added on the canvas")

    def test_refused_deletion_is_a_notification_then_archive_and_delete(self):
        scenario = self.create_scenario(name="Deletion tour")
        wait = self.add_node(scenario, "wait", name="Wait a week", wait_amount=1, wait_unit="weeks")
        scenario.action_start()
        self.emit(self.type_cart, self.partner, {"total": 1, "items": []})
        self.dispatch()
        participant = self.participant_of(scenario, self.partner)
        self.assertEqual(participant.step_ids.state, "scheduled")
        scenario.action_pause()
        self.start_tour(
            f"/odoo/action-marketing_event_automation.action_marketing_scenario/{scenario.id}",
            "marketing_scenario_flow_delete_tour",
            login=self.marketing_user.login,
        )
        self.assertFalse(wait.exists())
        self.assertNotEqual(participant.state, "running", "archiving the wait canceled the contact's step")
