from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError

MARKETING_USER_GROUP = "marketing_event_automation.group_marketing_automation_user"


class MarketingScenarioEnrollWizard(models.TransientModel):
    """Add to Scenario: the contacts selected in a list enter a running scenario by hand."""

    _name = "marketing.scenario.enroll.wizard"
    _description = "Add Contacts to a Scenario"

    scenario_id = fields.Many2one(
        "marketing.scenario",
        ondelete="cascade",
        domain=[("state", "=", "running")],
        help="A running scenario of your companies: the contacts enter it now, as if its trigger had fired.",
    )
    partner_ids = fields.Many2many("res.partner", string="Contacts")
    partner_count = fields.Integer(compute="_compute_partner_count")
    state = fields.Selection([("choose", "Choose"), ("done", "Done")], default="choose", required=True)
    added_count = fields.Integer(string="Added", readonly=True)
    other_company_count = fields.Integer(string="Of Another Company", readonly=True)
    outside_audience_count = fields.Integer(string="Outside the Audience", readonly=True)
    policy_count = fields.Integer(string="Kept Out by the Entry Policy", readonly=True)
    result_message = fields.Text(readonly=True)

    @api.model
    def default_get(self, fields_list):
        values = super().default_get(fields_list)
        context = self.env.context
        if "partner_ids" in fields_list and context.get("active_model") == "res.partner" and context.get("active_ids"):
            values["partner_ids"] = [(6, 0, context["active_ids"])]
        return values

    @api.depends("partner_ids")
    def _compute_partner_count(self):
        for wizard in self:
            wizard.partner_count = len(wizard.partner_ids)

    def action_add(self):
        self.ensure_one()
        if not (self.env.su or self.env.user.has_group(MARKETING_USER_GROUP)):
            raise AccessError(self.env._("Only marketing automation users may add contacts to a scenario."))
        scenario = self.scenario_id
        if not scenario:
            raise UserError(self.env._("Scenario: choose the scenario the contacts enter."))
        if not self.partner_ids:
            raise UserError(self.env._("Contacts: select the contacts to add in the list first."))
        # As the user: a scenario of his companies (record rules) and contacts he may read.
        scenario.check_access("read")
        self.partner_ids.check_access("read")
        if scenario.state != "running":
            raise UserError(self.env._("Scenario: %(name)s is not running, start it first.", name=scenario.name))
        partners = self.partner_ids
        own_company = partners.filtered(
            lambda partner: partner.company_id in (scenario.company_id, self.env["res.company"])
        )
        # sudo: the engine's bookkeeping (participants and their first steps) is
        # superuser's; who enters is what the audience lets in, as the
        # scenario's Responsible searches it, and what the entry policy allows.
        engine = scenario.sudo()
        Audience = engine._audience_partners()
        in_audience = (
            Audience.search([("id", "in", own_company.ids), *engine._audience_domain()]).ids
            if Audience is not None
            else []
        )
        participants = (
            engine._enroll_partners(in_audience) if in_audience else self.env["marketing.scenario.participant"]
        )
        if participants:
            self.env["marketing.scenario.step"].sudo()._wake_advance()
        added = len(participants)
        counts = {
            "added_count": added,
            "other_company_count": len(partners) - len(own_company),
            "outside_audience_count": len(own_company) - len(in_audience),
            "policy_count": len(in_audience) - added,
        }
        self.write({**counts, "state": "done", "result_message": self._result_message(scenario, counts)})
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "views": [(False, "form")],
            "target": "new",
            "name": self.env._("Add to Scenario"),
        }

    def _result_message(self, scenario, counts):
        lines = [self.env._("%(count)s contact(s) added to %(name)s.", count=counts["added_count"], name=scenario.name)]
        if counts["other_company_count"]:
            lines.append(
                self.env._(
                    "%(count)s not added: they belong to another company than %(company)s.",
                    count=counts["other_company_count"],
                    company=scenario.company_id.name,
                )
            )
        if counts["outside_audience_count"]:
            lines.append(
                self.env._(
                    "%(count)s not added: outside the scenario's audience.", count=counts["outside_audience_count"]
                )
            )
        if counts["policy_count"]:
            policies = dict(scenario._fields["entry_policy"]._description_selection(self.env))
            lines.append(
                self.env._(
                    "%(count)s not added: the entry policy (%(policy)s) keeps them out, they already ran or run "
                    "through it.",
                    count=counts["policy_count"],
                    policy=policies[scenario.entry_policy],
                )
            )
        return "\n".join(lines)
