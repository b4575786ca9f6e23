from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError

MAX_TEST_STEPS = 200


class MarketingScenarioTestWizard(models.TransientModel):
    _name = "marketing.scenario.test.wizard"
    _description = "Scenario Test Run"

    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade")
    partner_id = fields.Many2one("res.partner", string="Contact", required=True, ondelete="cascade")
    participant_id = fields.Many2one("marketing.scenario.participant", readonly=True, ondelete="cascade")
    step_ids = fields.One2many(related="participant_id.step_ids", string="Steps")
    state = fields.Selection([("draft", "Draft"), ("done", "Done")], default="draft", readonly=True)

    @api.model
    def _run(self, scenario, partner, actor=None):
        """Run ``scenario`` for ``partner`` now, waits skipped; return the test participant.

        The nodes act with the rights of ``actor`` (by default the scenario's
        Responsible), who must find the contact in the scenario's audience.
        """
        actor = actor or scenario.user_id
        problems = scenario._check_ready()
        if problems:
            raise UserError(self.env._("%(name)s cannot run:", name=scenario.name) + "\n- " + "\n- ".join(problems))
        Partner = scenario._audience_partners(actor)
        if Partner is None or not Partner.search_count(
            [("id", "=", partner.id), *scenario._audience_domain()], limit=1
        ):
            raise UserError(
                self.env._(
                    "%(contact)s is not in the audience of %(name)s (its filter and its company %(company)s).",
                    contact=partner.display_name,
                    name=scenario.name,
                    company=scenario.company_id.name,
                )
            )
        participant = scenario._enroll_partners([partner.id], test=True)
        Step = self.env["marketing.scenario.step"]
        executed = 0
        while executed < MAX_TEST_STEPS:
            # Waits are skipped: whatever is scheduled runs now, in tree order.
            steps = Step.search([("participant_id", "=", participant.id), ("state", "=", "scheduled")], order="id")
            if not steps:
                break
            steps._execute(actor=actor)
            executed += len(steps)
        else:
            participant._finish("canceled", self.env._("Test run stopped after %(count)s steps", count=MAX_TEST_STEPS))
        return participant

    def action_run(self):
        self.ensure_one()
        # As the user: a scenario and a contact he may read.
        self.scenario_id.check_access("read")
        self.partner_id.check_access("read")
        # sudo: the engine's bookkeeping (participant, steps) is superuser's;
        # the nodes act with the rights of the user running the test.
        participant = self.sudo()._run(self.scenario_id.sudo(), self.partner_id.sudo(), actor=self.env.user)
        self.write({"participant_id": participant.id, "state": "done"})
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Test Run: %(name)s", name=self.scenario_id.name),
        }
