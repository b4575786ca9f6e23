from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError


class MarketingEngagementAdjustWizard(models.TransientModel):
    _name = "marketing.engagement.adjust.wizard"
    _description = "Adjust Engagement Scores"

    partner_ids = fields.Many2many("res.partner", string="Contacts", required=True)
    partner_count = fields.Integer(compute="_compute_partner_count")
    points = fields.Integer(required=True, help="Added to each contact's score; negative to take points.")
    reason = fields.Char(required=True, help="Written in each contact's score history.")

    @api.model
    def default_get(self, fields_list):
        values = super().default_get(fields_list)
        context = self.env.context
        if "partner_ids" in fields_list and context.get("active_model") == "res.partner" and context.get("active_ids"):
            values["partner_ids"] = [fields.Command.set(context["active_ids"])]
        return values

    @api.depends("partner_ids")
    def _compute_partner_count(self):
        for wizard in self:
            wizard.partner_count = len(wizard.partner_ids)

    def action_apply(self):
        self.ensure_one()
        if not self.points:
            raise ValidationError(self.env._("Points: give a number of points other than 0."))
        if not self.reason or not self.reason.strip():
            raise ValidationError(self.env._("Reason: say why the score changes; it is shown in the history."))
        # Only marketing users can create this wizard (access rights), so the
        # change is theirs; the score API logs it with the user as its cause.
        self.env["res.partner"]._marketing_change_score(
            dict.fromkeys(self.partner_ids.ids, self.points),
            self.reason.strip(),
            "manual",
            origin_ref=self.env.user,
        )
        return {"type": "ir.actions.act_window_close"}
