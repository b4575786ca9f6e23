from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tests import new_test_user
from odoo.tests import tagged
from odoo.tools import mute_logger

from . import test_scenario_performance
from .scenario_common import ScenarioCommon

STEP_LOGGER = "odoo.addons.marketing_event_automation.models.marketing_scenario_step"
MARKETING_USER_GROUP = "marketing_event_automation.group_marketing_automation_user"


def marketing_user(env, login, *groups):
    """A user of the marketing group only, or with ``groups`` too (the right to edit contacts...)."""
    return new_test_user(env, login=login, groups=",".join((MARKETING_USER_GROUP, *groups)))


@tagged("post_install", "-at_install")
class TestEngineActsAsResponsible(ScenarioCommon, MockEmail):
    """The nodes act with the rights of the scenario's Responsible, a marketer without the right to edit contacts."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.marketer = marketing_user(cls.env, "mea_rights_marketer")
        cls.editor = marketing_user(cls.env, "mea_rights_editor", "base.group_partner_manager")
        cls.employee = new_test_user(cls.env, login="mea_rights_employee", email="employee@example.com")
        cls.ref_field = cls.env["ir.model.fields"]._get("res.partner", "ref")
        cls.email_field = cls.env["ir.model.fields"]._get("res.partner", "email")

    def marketer_scenario(self, user=None, **values):
        """A scenario built and started by ``user`` (the marketer by default), who becomes its Responsible."""
        user = user or self.marketer
        return self.create_scenario(**values).with_user(user)

    def run_for(self, scenario, partner):
        scenario.action_start()
        self.emit(self.type_cart, partner, {"total": 1.0, "items": [{"sku": "A"}]})
        self.dispatch()
        with mute_logger(STEP_LOGGER), self.mock_mail_gateway():
            self.advance()
        return self.participant_of(scenario, partner)

    def force_start(self, scenario):
        """Running without Start's checks, as if the node had been changed after them."""
        scenario.sudo().write({"state": "running", "user_id": self.marketer.id})

    def test_marketer_cannot_write_contacts_through_a_field_update(self):
        scenario = self.create_scenario(user_id=self.marketer.id)
        node = self.add_node(scenario, "field_update", field_id=self.ref_field.id, field_value="PWNED")
        with self.assertRaisesRegex(UserError, "may not edit contacts"):
            scenario.with_user(self.marketer).action_start()
        self.force_start(scenario)
        participant = self.run_for(scenario, self.partner)
        step = self.steps_of(participant, node)
        self.assertEqual(step.state, "error")
        self.assertIn("may not edit contacts", step.result)
        self.assertFalse(self.partner.ref)

    def test_a_user_with_contact_rights_updates_the_field(self):
        scenario = self.create_scenario()
        node = self.add_node(scenario, "field_update", field_id=self.ref_field.id, field_value="VIP-1")
        participant = self.run_for(scenario.with_user(self.editor), self.partner)
        self.assertEqual(scenario.user_id, self.editor, "who starts becomes the Responsible")
        self.assertEqual(self.steps_of(participant, node).state, "done")
        self.assertEqual(self.partner.ref, "VIP-1")

    def test_email_and_identity_fields_are_refused_by_the_server(self):
        scenario = self.create_scenario()
        for name in ("email", "company_id", "parent_id", "user_id", "vat", "marketing_external_id", "active"):
            field = self.env["ir.model.fields"]._get("res.partner", name)
            with self.subTest(field=name), self.assertRaisesRegex(ValidationError, "cannot be changed by a scenario"):
                self.add_node(scenario, "field_update", field_id=field.id, field_value="1")

    def test_email_of_a_users_contact_cannot_be_written_by_any_node(self):
        """Neither a field update saved behind the constraint's back nor a server action writes the email."""
        scenario = self.create_scenario()
        node = self.add_node(scenario, "field_update", field_id=self.ref_field.id, field_value="x")
        self.env.cr.execute(
            "UPDATE marketing_scenario_node SET field_id = %s, field_value = 'evil@example.com' WHERE id = %s",
            (self.email_field.id, node.id),
        )
        node.invalidate_recordset()
        action = self.env["ir.actions.server"].create(
            {
                "name": "Set the email",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "state": "object_write",
                "update_path": "email",
                "value": "evil@example.com",
            }
        )
        self.add_node(scenario, "server_action", server_action_id=action.id)
        scenario.user_id = self.editor
        problems = "\n".join(scenario._check_ready())
        self.assertIn("cannot be changed by a scenario", problems)
        self.assertIn("which a scenario may not change", problems)
        scenario.sudo().write({"state": "running"})
        participant = self.run_for(scenario, self.employee.partner_id)
        steps = self.steps_of(participant)
        self.assertEqual(steps.mapped("state"), ["error", "error"])
        self.assertIn("cannot be changed by a scenario", steps[0].result)
        self.assertIn("which a scenario may not change", steps[1].result)
        self.assertEqual(self.employee.partner_id.email, "employee@example.com")

    def test_python_code_actions_need_a_system_administrator(self):
        action = self.env["ir.actions.server"].create(
            {
                "name": "Code",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "state": "code",
                "code": "records.write({'comment': 'code ran'})",
            }
        )
        scenario = self.create_scenario()
        node = self.add_node(scenario, "server_action", server_action_id=action.id)
        with self.assertRaisesRegex(UserError, "only a system administrator"):
            scenario.with_user(self.editor).action_start()
        scenario.sudo().write({"state": "running", "user_id": self.editor.id})
        participant = self.run_for(scenario, self.partner)
        step = self.steps_of(participant, node)
        self.assertEqual(step.state, "error")
        self.assertIn("only a system administrator", step.result)
        self.assertFalse(self.partner.comment)

    def test_server_action_restricted_to_other_groups_is_refused(self):
        action = self.env["ir.actions.server"].create(
            {
                "name": "Admins only",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "state": "object_write",
                "update_path": "ref",
                "value": "ADMIN",
                "groups_id": [(6, 0, self.env.ref("base.group_system").ids)],
            }
        )
        scenario = self.create_scenario()
        node = self.add_node(scenario, "server_action", server_action_id=action.id)
        scenario.sudo().write({"state": "running", "user_id": self.editor.id})
        participant = self.run_for(scenario, self.partner)
        self.assertEqual(self.steps_of(participant, node).state, "error")
        self.assertFalse(self.partner.ref)

    def test_activities_need_the_right_to_edit_contacts_tags_the_marketing_group(self):
        scenario = self.create_scenario(user_id=self.marketer.id)
        tag = self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        activity = self.add_node(
            scenario,
            "activity",
            tag,
            activity_type_id=self.env.ref("mail.mail_activity_data_todo").id,
            activity_user_id=self.marketer.id,
        )
        self.force_start(scenario)
        participant = self.run_for(scenario, self.partner)
        self.assertEqual(self.steps_of(participant, tag).state, "done", "segmenting is the marketer's right")
        self.assertIn(self.tag_vip, self.partner.category_id)
        step = self.steps_of(participant, activity)
        self.assertEqual(step.state, "error")
        self.assertIn("may not edit contacts", step.result)
        self.assertFalse(
            self.env["mail.activity"].search([("res_model", "=", "res.partner"), ("res_id", "=", self.partner.id)])
        )
        # A Responsible outside the marketing group does not even tag.
        scenario.sudo().write({"user_id": self.sales_user.id})
        participant = self.run_for(scenario, self.bob)
        self.assertEqual(self.steps_of(participant, tag).state, "error")
        self.assertNotIn(self.tag_vip, self.bob.category_id)
        scenario.sudo().write({"state": "draft"})
        scenario.with_user(self.editor).action_start()
        carol = self.env["res.partner"].create({"name": "Carol", "email": "carol@example.com"})
        participant = self.run_for(scenario, carol)
        self.assertEqual(self.steps_of(participant).mapped("state"), ["done", "done"])

    def test_marketer_sends_and_segments_the_contacts_he_reads(self):
        """Emails, scores, lists and blacklists are the marketing group's own: no right to edit contacts needed."""
        mailing_list = self.env["mailing.list"].create({"name": "Marketer's list"})
        scenario = self.create_scenario(user_id=self.marketer.id)
        email = self.add_node(scenario, "email")
        email.mailing_id.write({"subject": "Hi", "body_html": "<p>Hi</p>"})
        score = self.add_node(scenario, "score", email, score_delta=2, score_reason="mailed")
        listed = self.add_node(scenario, "list_add", score, mailing_list_id=mailing_list.id)
        self.add_node(scenario, "blacklist", listed, blacklist_email=True)
        scenario.with_user(self.marketer).action_start()
        participant = self.run_for(scenario, self.partner)
        self.assertEqual(
            self.steps_of(participant).mapped("state"), ["done"] * 4, self.steps_of(participant).mapped("result")
        )
        self.assertEqual(self.partner.engagement_score, 2)
        self.assertIn("alice@example.com", mailing_list.contact_ids.mapped("email"))
        self.assertTrue(self.partner.is_blacklisted)

    def test_marketer_cannot_make_somebody_else_responsible(self):
        admin = self.env.ref("base.user_admin")
        scenario = self.create_scenario().with_user(self.marketer)
        with self.assertRaises(AccessError):
            scenario.write({"user_id": admin.id})
        with self.assertRaises(AccessError):
            self.Scenario.with_user(self.marketer).create({"name": "Mine", "user_id": admin.id})
        with self.assertRaises(AccessError):
            scenario.write({"state": "running"})
        # A copy of somebody else's scenario is the copier's.
        self.assertEqual(self.create_scenario(user_id=admin.id).with_user(self.marketer).copy().user_id, self.marketer)

    def test_condition_counts_only_what_the_responsible_can_search(self):
        """A contact filter reaching a contact of another company answers No for a marketer who cannot see it."""
        other_company = self.env["res.company"].create({"name": "Other company"})
        self.env["res.partner"].create(
            {"name": "Secret", "email": "secret@other.example", "parent_id": self.partner.id}
        ).company_id = other_company
        scenario = self.create_scenario(user_id=self.marketer.id)
        condition = self.add_node(
            scenario,
            "condition",
            condition_type="domain",
            condition_domain="[('child_ids.email', '=', 'secret@other.example')]",
        )
        self.force_start(scenario)
        participant = self.run_for(scenario, self.partner)
        step = self.steps_of(participant, condition)
        self.assertEqual((step.state, step.branch), ("done", "no"), step.result)

    def test_condition_filter_is_validated_on_save(self):
        scenario = self.create_scenario()
        for domain in ("[('no_such_field', '=', 1)]", "'not a list'", "[("):
            with self.subTest(domain=domain), self.assertRaisesRegex(ValidationError, "not a valid filter"):
                self.add_node(scenario, "condition", condition_type="domain", condition_domain=domain)

    def test_audience_is_evaluated_with_the_responsible_rights(self):
        other_company = self.env["res.company"].create({"name": "Other company"})
        self.env["res.partner"].create(
            {"name": "Secret", "email": "secret@other.example", "parent_id": self.partner.id}
        ).company_id = other_company
        scenario = self.create_scenario(
            user_id=self.marketer.id, audience_domain="[('child_ids.email', '=', 'secret@other.example')]"
        )
        self.add_node(scenario, "wait", wait_amount=1, wait_unit="days")
        self.force_start(scenario)
        self.run_for(scenario, self.partner)
        self.assertFalse(self.participant_of(scenario, self.partner), "the marketer cannot find this contact")


@tagged("post_install", "-at_install")
class TestTestRunRights(ScenarioCommon, MockEmail):
    """Test Run keeps to the audience and the company, and acts as the user who starts it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.marketer = marketing_user(cls.env, "mea_test_run_marketer")
        cls.other_company = cls.env["res.company"].create({"name": "Other company"})
        cls.outsider = cls.env["res.partner"].create(
            {"name": "Outsider", "email": "outsider@other.example", "company_id": cls.other_company.id}
        )

    def run_test(self, scenario, partner):
        wizard = (
            self.env["marketing.scenario.test.wizard"]
            .with_user(self.marketer)
            .create({"scenario_id": scenario.id, "partner_id": partner.id})
        )
        with mute_logger(STEP_LOGGER), self.mock_mail_gateway():
            wizard.action_run()
        return wizard

    def test_contact_outside_the_audience_is_refused(self):
        scenario = self.create_scenario(audience_domain="[('email', 'ilike', '@vip.example')]")
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        with self.assertRaisesRegex(UserError, "is not in the audience"):
            self.run_test(scenario, self.partner)
        self.assertFalse(self.Participant.search([("scenario_id", "=", scenario.id)]))

    def test_contact_of_another_company_is_refused(self):
        scenario = self.create_scenario()
        self.add_node(scenario, "tag_add", tag_ids=[(6, 0, self.tag_vip.ids)])
        with self.assertRaises(AccessError):
            self.run_test(scenario, self.outsider)
        self.assertNotIn(self.tag_vip, self.outsider.category_id)

    def test_nodes_act_as_the_user_running_the_test(self):
        scenario = self.create_scenario()
        node = self.add_node(
            scenario,
            "field_update",
            field_id=self.env["ir.model.fields"]._get("res.partner", "ref").id,
            field_value="TEST",
        )
        wizard = self.run_test(scenario, self.partner)
        step = wizard.step_ids.filtered(lambda step: step.node_id == node)
        self.assertEqual(step.state, "error")
        self.assertIn("may not edit contacts", step.result)
        self.assertFalse(self.partner.ref)


@tagged("post_install", "-at_install")
class TestEngineRightsQueryCount(ScenarioCommon, MockEmail):
    """Acting as a Responsible who is not superuser costs the same queries for 10 steps as for 100."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.editor = marketing_user(cls.env, "mea_rights_perf_editor", "base.group_partner_manager")

    def create_scenario(self, **values):
        return super().create_scenario(user_id=self.editor.id, **values)

    def node_values(self, node_type, label):
        if node_type == "field_update":
            return {"field_id": self.env["ir.model.fields"]._get("res.partner", "ref").id, "field_value": "PERF"}
        return test_scenario_performance.TestScenarioQueryCountByNode.node_values(self, node_type, label)

    # The performance test's own batch, run with this class's Responsible.
    one_node_batch = test_scenario_performance.TestScenarioQueryCountByNode.one_node_batch

    def test_each_checked_node_kind_runs_a_batch_in_constant_queries(self):
        for node_type in ("tag_add", "condition", "field_update", "list_add", "blacklist", "score"):
            with self.subTest(node_type=node_type):
                self.one_node_batch(node_type, 3, f"warm-r-{node_type}")
                queries_10 = self.one_node_batch(node_type, 10, f"ten-r-{node_type}")
                queries_100 = self.one_node_batch(node_type, 100, f"hundred-r-{node_type}")
                self.assertLessEqual(queries_100, queries_10 + 2, f"{node_type}: {queries_10} then {queries_100}")
