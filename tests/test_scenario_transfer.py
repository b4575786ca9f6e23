import base64
import copy
import json

from odoo.exceptions import UserError
from odoo.tests import tagged

from ..models.marketing_scenario_transfer import MAX_IMPORT_BYTES
from ..models.marketing_scenario_transfer import MAX_IMPORT_NODES
from ..models.marketing_scenario_transfer import TRANSFER_FORMAT
from .scenario_common import ScenarioCommon


@tagged("post_install", "-at_install")
class TestScenarioTransfer(ScenarioCommon):
    """Export a scenario as JSON and import it again: every setting, node and mailing, or nothing at all."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.mailing_list = cls.env["mailing.list"].create({"name": "Newsletter"})
        # Mailings read the cart with placeholders: only template editors may write them, by hand or by import.
        cls.template_editor = cls.env.ref("mail.group_mail_template_editor")
        cls.marketing_user.groups_id |= cls.template_editor

    def build(self):
        scenario = self.create_scenario(
            name="Cart recovery",
            trigger_params_filter="total > 10",
            correlation_param="total",
            entry_policy="once",
            control_group_percent=10,
            capped_message_policy="skip",
            audience_domain="[('email', '!=', False)]",
            exit_event_type_ids=[(6, 0, self.type_purchase.ids)],
            objective_event_type_id=self.type_purchase.id,
            objective_days=5,
            exit_on_objective=True,
        )
        wait = self.add_node(
            scenario,
            "wait_event",
            name="Bought?",
            wait_event_type_id=self.type_purchase.id,
            wait_amount=4,
            wait_unit="hours",
        )
        email = self.add_node(scenario, "email", wait, branch="no", name="Reminder")
        email.mailing_id.write(
            {
                "subject": "Your cart",
                "preview": "Still there",
                "body_html": "<p>Total: <t t-out=\"object.marketing_event_params.get('total')\"/></p>",
            }
        )
        self.add_node(scenario, "tag_add", wait, branch="yes", tag_ids=[(6, 0, (self.tag_vip | self.tag_lost).ids)])
        later = self.add_node(scenario, "wait", email, wait_amount=1, wait_unit="days", window_enabled=True)
        opened = self.add_node(
            scenario,
            "condition",
            later,
            condition_type="email",
            condition_node_id=email.id,
            condition_email_status="opened",
        )
        split = self.add_node(scenario, "split", opened, branch="no")
        sms = self.add_node(scenario, "sms", split, branch="arm", split_weight=30, name="SMS")
        sms.mailing_id.write({"body_plaintext": "Come back {{ object.name }}", "sms_allow_unsubscribe": True})
        self.add_node(scenario, "list_add", split, branch="arm", split_weight=70, mailing_list_id=self.mailing_list.id)
        self.add_node(scenario, "score", opened, branch="yes", score_delta=5, score_reason="Opened")
        return scenario

    def import_as(self, user, document):
        return self.Scenario.with_user(user)._transfer_import(document)

    def assert_refused(self, document, *messages, user=None):
        scenarios = self.Scenario.with_context(active_test=False).search_count([])
        mailings = self.env["mailing.mailing"].search_count([])
        raw = document if isinstance(document, (bytes, str)) else json.dumps(document)
        with self.assertRaises(UserError) as caught:
            self.Scenario.with_user(user or self.marketing_user)._transfer_import_bytes(raw)
        text = str(caught.exception)
        self.assertTrue(text.startswith("The scenario cannot be imported:"), text)
        for message in messages:
            self.assertIn(message, text)
        self.assertEqual(self.Scenario.with_context(active_test=False).search_count([]), scenarios, "nothing created")
        self.assertEqual(self.env["mailing.mailing"].search_count([]), mailings, "no mailing left over")
        return text

    def test_round_trip_gives_an_equal_tree(self):
        scenario = self.build()
        document = scenario._transfer_export()
        self.assertEqual((document["format"], document["version"]), (TRANSFER_FORMAT, 1))
        self.assertEqual(document["scenario"]["trigger_event_type_id"], self.type_cart.key)
        self.assertEqual(document["scenario"]["exit_event_type_ids"], [self.type_purchase.key])
        self.assertEqual(
            (document["scenario"]["control_group_percent"], document["scenario"]["capped_message_policy"]), (10, "skip")
        )
        self.assertEqual(len(document["nodes"]), 9)
        email = next(node for node in document["nodes"] if node["node_type"] == "email")
        self.assertEqual(email["mailing"]["subject"], "Your cart")
        tags = next(node for node in document["nodes"] if node["node_type"] == "tag_add")
        self.assertEqual(sorted(tags["settings"]["tag_ids"]), ["Lost cart", "VIP"])

        imported = self.import_as(self.marketing_user, json.loads(json.dumps(document)))
        self.assertNotEqual(imported, scenario)
        self.assertEqual((imported.state, imported.user_id), ("draft", self.marketing_user))
        self.assertEqual(imported.sudo()._transfer_export(), document)
        self.assertEqual(len(imported.node_ids), 9)
        self.assertEqual((imported.control_group_percent, imported.capped_message_policy), (10, "skip"))
        imported_email = imported.node_ids.filtered(lambda node: node.node_type == "email")
        self.assertNotEqual(imported_email.mailing_id, scenario.node_ids.mailing_id, "mailings of its own")
        condition = imported.node_ids.filtered(lambda node: node.node_type == "condition")
        self.assertEqual(condition.condition_node_id, imported_email)
        self.assertFalse(imported.sudo()._check_ready(), "it can start as it is")

    def test_dynamic_mailings_need_a_template_editor(self):
        document = self.build()._transfer_export()
        self.marketing_user.groups_id -= self.template_editor
        self.assert_refused(document, "Mail Template Editor")

    def test_export_downloads_a_file_and_the_wizard_imports_it(self):
        scenario = self.build()
        action = scenario.with_user(self.marketing_user).action_export_json()
        attachment_id = int(action["url"].split("/")[-1].split("?")[0])
        raw = self.env["ir.attachment"].browse(attachment_id).raw
        self.assertEqual(json.loads(raw), scenario._transfer_export())
        wizard = (
            self.env["marketing.scenario.import.wizard"]
            .with_user(self.marketing_user)
            .create({"data_file": base64.b64encode(raw), "filename": "cart.json"})
        )
        result = wizard.action_import()
        imported = self.Scenario.browse(result["res_id"])
        self.assertEqual((result["res_model"], result["target"]), ("marketing.scenario", "current"))
        self.assertEqual(imported.name, "Cart recovery")
        self.assertEqual(imported.company_id, self.env.company)

    def test_missing_records_are_named_and_nothing_is_created(self):
        document = self.build()._transfer_export()
        document["scenario"]["trigger_event_type_id"] = "purchase_elsewhere"
        tags = next(node for node in document["nodes"] if node["node_type"] == "tag_add")
        tags["settings"]["tag_ids"] = ["VIP", "Gold"]
        listed = next(node for node in document["nodes"] if node["node_type"] == "list_add")
        listed["settings"]["mailing_list_id"] = "Old newsletter"
        self.assert_refused(
            document,
            "scenario.trigger_event_type_id: event type 'purchase_elsewhere' not found.",
            "settings.tag_ids: tag 'Gold' not found.",
            "settings.mailing_list_id: mailing list 'Old newsletter' not found.",
        )

    def test_wrong_types_and_unknown_kinds_each_have_a_clear_error(self):
        document = self.build()._transfer_export()
        document["scenario"].update({"name": 5, "repeat_interval": "twice", "entry_policy": "sometimes"})
        document["scenario"]["exit_on_objective"] = "yes"
        document["nodes"][0]["node_type"] = "teleport"
        document["nodes"][1]["branch"] = "maybe"
        document["nodes"][2]["settings"] = {"tag_ids": "VIP"}
        document["nodes"][3]["mailing"] = {"subject": "x"}
        text = self.assert_refused(
            document,
            "scenario.name: a text is expected.",
            "scenario.repeat_interval: a whole number is expected.",
            'scenario.entry_policy: "sometimes" is none of once, once_at_a_time, every_time.',
            "scenario.exit_on_objective: true or false is expected.",
            'nodes[1] (1).node_type: unknown kind of node "teleport".',
            'nodes[2] (2).branch: unknown branch "maybe".',
        )
        self.assertIn("only an email or SMS node has a mailing", text)

    def test_hostile_documents_are_refused(self):
        cases = [
            (b"\xff\xfe not utf-8", "The file is not JSON"),
            ("{not json", "The file is not JSON"),
            ("[" * 100000 + "]" * 100000, "The file is not JSON"),
            ("[1, 2]", "The document must be a JSON object."),
            ('{"format": "something else", "version": 1}', "this is no scenario export"),
            (json.dumps({"format": TRANSFER_FORMAT, "version": 99}), "comes from a newer version"),
            (json.dumps({"format": TRANSFER_FORMAT, "version": "1"}), "version: a whole number is expected."),
            (json.dumps({"format": TRANSFER_FORMAT, "version": 1, "scenario": []}), "scenario: an object"),
            (
                json.dumps({"format": TRANSFER_FORMAT, "version": 1, "scenario": {"name": "x"}, "nodes": {}}),
                "nodes: a list",
            ),
            (
                json.dumps({"format": TRANSFER_FORMAT, "version": 1, "scenario": {"name": "x", "state": "running"}}),
                "scenario: unknown settings state",
            ),
            (
                json.dumps({"format": TRANSFER_FORMAT, "version": 1, "scenario": {"name": "x"}, "nodes": [7, None]}),
                "nodes[1]: an object is expected.",
            ),
        ]
        for raw, message in cases:
            with self.subTest(message=message):
                self.assert_refused(raw, message)
        self.assert_refused(" " * (MAX_IMPORT_BYTES + 1), "The file is too large")
        many = {
            "format": TRANSFER_FORMAT,
            "version": 1,
            "scenario": {"name": "Many"},
            "nodes": [{"ref": index, "node_type": "wait"} for index in range(MAX_IMPORT_NODES + 1)],
        }
        self.assert_refused(many, f"nodes: {MAX_IMPORT_NODES + 1} nodes, at most {MAX_IMPORT_NODES}.")

    def test_cycles_dangling_parents_and_duplicate_refs(self):
        base = {"format": TRANSFER_FORMAT, "version": 1, "scenario": {"name": "Loops", "trigger_type": "now"}}
        loop = dict(
            base,
            nodes=[
                {"ref": "a", "parent": "b", "node_type": "wait"},
                {"ref": "b", "parent": "a", "node_type": "wait"},
                {"ref": "c", "parent": "c", "node_type": "wait"},
            ],
        )
        text = self.assert_refused(loop, "the nodes come after each other in a loop")
        self.assertEqual(text.count("loop"), 2, "one loop a-b, one c")
        self.assert_refused(dict(base, nodes=[{"ref": "a", "parent": "z", "node_type": "wait"}]), "no node is named z")
        self.assert_refused(
            dict(base, nodes=[{"ref": "a", "node_type": "wait"}, {"ref": "a", "node_type": "wait"}]),
            "a names two nodes",
        )
        self.assert_refused(
            dict(base, nodes=[{"ref": True, "node_type": "wait"}]), "ref: a number or a text naming the node"
        )
        # A Yes branch after a plain wait: the tree's own rules refuse it, and the import with it.
        self.assert_refused(
            dict(
                base,
                nodes=[
                    {"ref": 1, "node_type": "wait"},
                    {"ref": 2, "parent": 1, "branch": "yes", "node_type": "wait"},
                ],
            ),
            "the branches Yes and No only follow a condition",
        )

    def test_a_marketing_user_cannot_import_what_he_may_not_build(self):
        action = self.env["ir.actions.server"].create(
            {
                "name": "Run some code",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "state": "code",
                "code": "records.write({'comment': 'x'})",
            }
        )
        document = {
            "format": TRANSFER_FORMAT,
            "version": 1,
            "scenario": {"name": "Code", "trigger_type": "now"},
            "nodes": [{"ref": 1, "node_type": "server_action", "settings": {"server_action_id": action.name}}],
        }
        self.assert_refused(document, "the server action Run some code runs code or changes other records")
        # The administrator may: the same checks pass for him.
        imported = self.Scenario._transfer_import(document)
        self.assertEqual(imported.node_ids.server_action_id, action)

    def test_secrets_stay_home(self):
        scenario = self.create_scenario(name="Hook")
        self.add_node(scenario, "webhook", webhook_url="https://example.com/hook", webhook_secret="s3cr3t")
        document = scenario._transfer_export()
        self.assertNotIn("s3cr3t", json.dumps(document))
        tampered = copy.deepcopy(document)
        tampered["nodes"][0]["settings"]["webhook_secret"] = "mine"
        self.assert_refused(tampered, "webhook_secret are no settings of a")
        imported = self.import_as(self.marketing_user, document)
        self.assertIn("give a signing secret", " ".join(imported.sudo()._check_ready()))
