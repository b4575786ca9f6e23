from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.tools import SQL
from odoo.tools import create_index

from ..utils.constants import PARTICIPANT_STATES
from ..utils.denormalized import CopiedMany2one
from ..utils.denormalized import drop_foreign_keys

# Written only by the engine: see write.
QUEUE_FIELDS = {
    "scenario_id",
    "partner_id",
    "company_id",
    "state",
    "entered_at",
    "ended_at",
    "occurrence_at",
    "event_id",
    "event_type_id",
    "event_params",
    "is_test",
    "is_control",
    "converted_at",
    "conversion_value",
    "correlation_value",
}


class MarketingScenarioParticipant(models.Model):
    _name = "marketing.scenario.participant"
    _description = "Scenario Participant"
    _order = "entered_at desc, id desc"
    _rec_name = "partner_id"
    # A queue row written by the engine, hundreds of thousands at a time:
    # entered_at and ended_at say when, the scenario says who. The four log
    # columns would cost two foreign-key checks and four values per row.
    _log_access = False

    # No index of its own: marketing_scenario_participant_scenario_partner_idx starts with it.
    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade", readonly=True)
    # Indexed for the ON DELETE CASCADE of a contact's deletion.
    partner_id = fields.Many2one(
        "res.partner", string="Contact", required=True, ondelete="cascade", readonly=True, index=True
    )
    # The scenario's company, copied for the record rules and the retention
    # policy: the scenario's foreign key keeps it (CopiedMany2one). No index:
    # a company is not selective (the queries go through the scenario, the
    # contact or the end date), and entry writes every index of each row.
    company_id = CopiedMany2one("res.company", related="scenario_id.company_id", store=True, readonly=True)
    state = fields.Selection(PARTICIPANT_STATES, required=True, default="running", readonly=True)
    entered_at = fields.Datetime(required=True, readonly=True, default=fields.Datetime.now)
    # The retention purge reads finished runs off it, oldest first.
    ended_at = fields.Datetime(readonly=True, index="btree_not_null")
    end_reason = fields.Char(readonly=True)
    occurrence_at = fields.Datetime(
        readonly=True, help="The occurrence of a date or repeat trigger this contact entered with."
    )
    event_id = fields.Many2one(
        "marketing.event", string="Triggering Event", readonly=True, ondelete="set null", index="btree_not_null"
    )
    event_type_id = fields.Many2one(
        "marketing.event.type", string="Triggering Event Type", readonly=True, index="btree_not_null"
    )
    event_params = fields.Json(
        string="Event Parameters", readonly=True, help="Parameters of the triggering event, available to templates."
    )
    correlation_value = fields.Char(
        string="Run Of",
        readonly=True,
        index="btree_not_null",
        help="The value of the scenario's One Run Per parameter in the triggering event (the cart, the order): "
        "exit events, waits for an event and the objective take this run only when they carry the same value.",
    )
    coupon_id = fields.Many2one(
        "marketing.coupon",
        readonly=True,
        ondelete="set null",
        index="btree_not_null",
        help="The code a Give a coupon node handed to the contact in this run.",
    )
    coupon_code = fields.Char(related="coupon_id.code", string="Coupon Code")
    is_test = fields.Boolean(string="Test Run", readonly=True, help="Test runs are left out of the statistics.")
    is_control = fields.Boolean(
        string="Control Group",
        readonly=True,
        help="Held out at entry: the contact runs through no node, and his conversion measures the lift.",
    )
    # Stored when the objective event is dispatched (or the objective changes), so that the
    # statistics are one aggregate over the participants, however long ago the events were purged.
    converted_at = fields.Datetime(
        readonly=True, help="When the contact reached the scenario's objective within its days (first time)."
    )
    currency_id = fields.Many2one(related="company_id.currency_id", string="Currency")
    conversion_value = fields.Monetary(
        readonly=True, help="Value of the objective event that converted the contact, in the company's currency."
    )
    step_ids = fields.One2many("marketing.scenario.step", "participant_id", string="Steps")
    step_count = fields.Integer(compute="_compute_step_count")

    def init(self):
        # Created by earlier versions: see company_id.
        drop_foreign_keys(self.env.cr, self._table, ["company_id"])
        self.env.cr.execute("DROP INDEX IF EXISTS marketing_scenario_participant__company_id_index")
        create_index(
            self.env.cr,
            "marketing_scenario_participant_scenario_partner_idx",
            self._table,
            ["scenario_id", "partner_id", "state"],
        )

    def write(self, vals):
        # The queue's own columns change only through the engine (as superuser)
        # and the actions that keep participants and steps consistent.
        if not self.env.su and set(vals) & QUEUE_FIELDS:
            raise AccessError(
                self.env._("A scenario run's contact, scenario and state change only through the scenario's actions.")
            )
        return super().write(vals)

    def _compute_step_count(self):
        counts = dict(
            self.env["marketing.scenario.step"]._read_group(
                [("participant_id", "in", self.ids)], ["participant_id"], ["__count"]
            )
        )
        for participant in self:
            participant.step_count = counts.get(participant, 0)

    def _finish(self, state, reason):
        """End these runs now: cancel their scheduled steps with ``reason``."""
        participants = self.filtered(lambda participant: participant.state == "running")
        if not participants:
            return
        now = fields.Datetime.now()
        Step = self.env["marketing.scenario.step"]
        Step.flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_step
                   SET state = 'canceled', result = %(reason)s, processed_at = %(now)s
                 WHERE participant_id IN %(ids)s AND state = 'scheduled'
                """,
                reason=reason,
                now=now,
                ids=tuple(participants.ids),
            )
        )
        Step.invalidate_model()
        # One statement: the ORM would build and write the values row by row.
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_participant
                   SET state = %(state)s, ended_at = %(now)s, end_reason = %(reason)s
                 WHERE id IN %(ids)s
                """,
                state=state,
                now=now,
                reason=reason,
                ids=tuple(participants.ids),
            )
        )
        participants.invalidate_recordset(["state", "ended_at", "end_reason"])
        if state == "completed":
            participants._emit_completed()
            participants.scenario_id._emit_finished_if_done()

    def _complete_if_done(self):
        """Complete the running participants that have no step left to run."""
        running = self.filtered(lambda participant: participant.state == "running")
        if not running:
            return
        busy = {
            participant.id
            for [participant] in self.env["marketing.scenario.step"]._read_group(
                [("participant_id", "in", running.ids), ("state", "=", "scheduled")], ["participant_id"]
            )
        }
        done = running.filtered(lambda participant: participant.id not in busy)
        done._finish("completed", self.env._("All steps done"))

    def _emit_completed(self):
        self.env["marketing.event"]._emit(
            "scenario_completed",
            [
                {
                    "partner_id": participant.partner_id.id,
                    "company_id": participant.company_id.id,
                    "params": {"scenario_id": participant.scenario_id.id, "scenario": participant.scenario_id.name},
                }
                for participant in self
                if not participant.is_test
            ],
        )

    @api.depends("partner_id", "scenario_id")
    def _compute_display_name(self):
        for participant in self:
            participant.display_name = f"{participant.scenario_id.name} / {participant.partner_id.display_name}"

    def action_view_steps(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_step"
        )
        action["domain"] = [("participant_id", "=", self.id)]
        return action
