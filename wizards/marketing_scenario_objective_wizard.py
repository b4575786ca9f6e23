from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError


class MarketingScenarioObjectiveWizard(models.TransientModel):
    _name = "marketing.scenario.objective.wizard"
    _description = "Scenario Objective"

    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade")
    objective_event_type_id = fields.Many2one(
        "marketing.event.type",
        string="Conversion Event",
        required=True,
        ondelete="cascade",
        domain=[("scope", "=", "contact")],
        help="The event that counts as a conversion, e.g. a purchase.",
    )
    objective_days = fields.Integer(string="Within (days)", required=True, default=7)

    @api.constrains("objective_days")
    def _check_objective_days(self):
        for wizard in self:
            if wizard.objective_days < 1:
                raise ValidationError(self.env._("Within (days): give at least 1 day."))

    def action_apply(self):
        self.ensure_one()
        self.scenario_id.write(
            {"objective_event_type_id": self.objective_event_type_id.id, "objective_days": self.objective_days}
        )
        return {"type": "ir.actions.act_window_close"}

    def action_skip(self):
        self.ensure_one()
        self.scenario_id.action_skip_objective()
        return {"type": "ir.actions.act_window_close"}
