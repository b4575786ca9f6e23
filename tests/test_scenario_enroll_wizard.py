from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.tests import new_test_user
from odoo.tests import tagged

from .scenario_common import ScenarioCommon


@tagged("post_install", "-at_install")
class TestScenarioEnrollWizard(ScenarioCommon):
    """Add to Scenario from the contact list, as a marketing user: audience, company and entry policy apply."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_b = cls.env["res.company"].create({"name": "Other shop"})
        cls.carol = cls.env["res.partner"].create({"name": "Carol", "email": "carol@elsewhere.org"})
        cls.dave = cls.env["res.partner"].create(
            {"name": "Dave", "email": "dave@example.com", "company_id": cls.company_b.id}
        )
        cls.marketing_user.company_ids = cls.company
        cls.both_companies_user = new_test_user(
            cls.env,
            login="mea_two_companies",
            groups="base.group_user,marketing_event_automation.group_marketing_automation_user",
            company_ids=[(6, 0, (cls.company | cls.company_b).ids)],
        )

    def running_scenario(self, user, company=None, **values):
        Scenario = self.Scenario.with_user(user).with_company(company or self.company)
        scenario = Scenario.create(
            {
                "name": "Manual welcome",
                "trigger_type": "event",
                "trigger_event_type_id": self.type_cart.id,
                "timezone": "UTC",
                "audience_domain": "[('email', 'ilike', 'example.com')]",
                "company_id": (company or self.company).id,
                **values,
            }
        )
        self.Node.with_user(user).with_company(company or self.company).create(
            {"scenario_id": scenario.id, "node_type": "wait", "wait_amount": 1, "wait_unit": "hours"}
        )
        scenario.action_start()
        return scenario

    def wizard(self, user, partners, scenario):
        return (
            self.env["marketing.scenario.enroll.wizard"]
            .with_user(user)
            .with_context(active_model="res.partner", active_ids=partners.ids)
            .create({"scenario_id": scenario.id})
        )

    def test_adds_the_selected_contacts_and_says_why_others_were_not(self):
        scenario = self.running_scenario(self.marketing_user)
        scenario.sudo()._enroll_partners([self.bob.id])
        wizard = self.wizard(self.marketing_user, self.partner | self.bob | self.carol, scenario)
        self.assertEqual(wizard.partner_count, 3)
        action = wizard.action_add()
        self.assertEqual((action["res_model"], action["res_id"]), (wizard._name, wizard.id))
        self.assertEqual(
            (wizard.added_count, wizard.outside_audience_count, wizard.policy_count, wizard.other_company_count),
            (1, 1, 1, 0),
        )
        self.assertEqual(
            wizard.result_message,
            "1 contact(s) added to Manual welcome.\n"
            "1 not added: outside the scenario's audience.\n"
            "1 not added: the entry policy (Once at a time) keeps them out, they already ran or run through it.",
        )
        run = self.participant_of(scenario, self.partner)
        self.assertEqual(run.state, "running")
        self.assertFalse(run.event_id, "a manual entry has no triggering event")
        self.assertEqual(run.step_ids.state, "scheduled")
        self.assertFalse(self.participant_of(scenario, self.carol))
        self.assertEqual(len(scenario.participant_ids), 2)

    def test_contacts_of_another_company_are_not_added(self):
        scenario = self.running_scenario(self.both_companies_user)
        wizard = self.wizard(self.both_companies_user, self.partner | self.dave, scenario)
        wizard.action_add()
        self.assertEqual((wizard.added_count, wizard.other_company_count), (1, 1))
        self.assertIn("1 not added: they belong to another company than", wizard.result_message)
        self.assertFalse(self.participant_of(scenario, self.dave))

    def test_another_company_s_scenario_is_refused(self):
        scenario_b = self.running_scenario(self.both_companies_user, company=self.company_b)
        wizard = self.wizard(self.marketing_user, self.partner, scenario_b)
        with self.assertRaises(AccessError):
            wizard.action_add()
        self.assertFalse(scenario_b.sudo().participant_ids)

    def test_only_marketing_users_may_add(self):
        scenario = self.running_scenario(self.marketing_user)
        with self.assertRaises(AccessError):
            self.wizard(self.sales_user, self.partner, scenario)
        action = self.env.ref("marketing_event_automation.action_marketing_scenario_enroll_wizard")
        self.assertEqual(action.binding_model_id.model, "res.partner")
        self.assertEqual(action.groups_id, self.env.ref("marketing_event_automation.group_marketing_automation_user"))

    def test_a_scenario_that_does_not_run_is_refused(self):
        scenario = self.running_scenario(self.marketing_user)
        scenario.action_pause()
        wizard = self.wizard(self.marketing_user, self.partner, scenario)
        with self.assertRaisesRegex(UserError, "Manual welcome is not running"):
            wizard.action_add()
        with self.assertRaisesRegex(UserError, "Scenario: choose"):
            self.wizard(self.marketing_user, self.partner, self.Scenario).action_add()

    def test_once_ever_keeps_out_a_contact_who_completed(self):
        scenario = self.running_scenario(self.marketing_user, entry_policy="once")
        self.wizard(self.marketing_user, self.partner, scenario).action_add()
        self.participant_of(scenario, self.partner).sudo()._finish("completed", "done")
        wizard = self.wizard(self.marketing_user, self.partner, scenario)
        wizard.action_add()
        self.assertEqual((wizard.added_count, wizard.policy_count), (0, 1))
        self.assertIn("(Once ever)", wizard.result_message)
