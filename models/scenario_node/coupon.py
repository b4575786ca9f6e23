"""The node kind "Give a coupon": one family of its own (see ``_node_type_info``).

Hands each contact of a batch one code of a coupon list (``marketing.coupon.list``)
and puts the run's codes in the context of the emails and SMS that follow.
"""

import json

from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL


class MarketingScenarioNode(models.Model):
    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(selection_add=[("coupon", "Give a coupon")], ondelete={"coupon": "cascade"})
    coupon_list_id = fields.Many2one(
        "marketing.coupon.list",
        ondelete="restrict",
        domain="[('company_id', '=', company_id)]",
        help="Each contact gets one unused code of this list.",
    )
    coupon_same_again = fields.Boolean(
        string="Same Code Again",
        default=True,
        help="A contact who already holds an unredeemed code of this list gets that code again instead of a new one.",
    )
    coupon_given_count = fields.Integer(string="Codes Given", compute="_compute_coupon_statistics")
    coupon_redeemed_count = fields.Integer(string="Codes Redeemed", compute="_compute_coupon_statistics")

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "coupon": {
                "family": "coupon",
                "icon": "fa-ticket",
                "fields": ("coupon_list_id", "coupon_same_again"),
                "problems": "_coupon_problems",
                "describe": "_coupon_description",
                "stats": "_coupon_stats",
                "rights": "_coupon_rights",
            },
        }

    def _compute_coupon_statistics(self):
        counts = {}
        coupon_nodes = [node.id for node in self if node.id and node.node_type == "coupon"]
        if coupon_nodes:
            for node, state, count in self.env["marketing.coupon"]._read_group(
                [("node_id", "in", coupon_nodes), ("state", "in", ("given", "redeemed"))],
                ["node_id", "state"],
                ["__count"],
            ):
                counts[node.id, state] = count
        for node in self:
            redeemed = counts.get((node.id, "redeemed"), 0)
            node.coupon_redeemed_count = redeemed
            node.coupon_given_count = counts.get((node.id, "given"), 0) + redeemed

    # Handler -------------------------------------------------------------

    def _run_coupon(self, steps):
        """Give each step's contact a code of the list: the held one again (if so set), else a new one.

        Constant queries per batch: one read of the codes held, one statement
        claiming the new codes under row locks, one storing them on the
        participants, one count for the low-stock check.
        """
        coupon_list = self.coupon_list_id
        if coupon_list._is_expired():
            return self._skipped(steps, self.env._("Coupon list expired"))
        partner_ids = list(dict.fromkeys(steps.partner_id.ids))
        codes = coupon_list._held_codes(partner_ids) if self.coupon_same_again else {}
        wanted = [partner_id for partner_id in partner_ids if partner_id not in codes]
        if wanted:
            codes.update(coupon_list._claim(wanted, node=self))
        outcomes = {}
        given = []
        for step in steps:
            held = codes.get(step.partner_id.id)
            if held:
                given.append((step.participant_id.id, held[0]))
                outcomes.update(self._done(step, held[1]))
            else:
                outcomes.update(self._skipped(step, self.env._("No code left")))
        self._store_participant_coupons(given)
        if len(given) < len(steps):
            coupon_list._notify_empty(self)
        coupon_list._check_low_stock()
        return outcomes

    def _store_participant_coupons(self, given):
        """Write each participant's code with one statement (participant id, coupon id)."""
        if not given:
            return
        Participant = self.env["marketing.scenario.participant"]
        Participant.flush_model(["coupon_id"])
        participant_ids, coupon_ids = zip(*given)
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_participant p SET coupon_id = v.coupon_id
                  FROM unnest(%(participants)s::int[], %(coupons)s::int[]) AS v (id, coupon_id)
                 WHERE p.id = v.id
                """,
                participants=list(participant_ids),
                coupons=list(coupon_ids),
            )
        )
        Participant.invalidate_model(["coupon_id", "coupon_code"])

    # Messages read the code ------------------------------------------------

    def _coupon_codes_context(self, steps):
        """The code each contact holds in this run, for the templates (``object.marketing_coupon_code``)."""
        return json.dumps(
            {step.partner_id.id: step.participant_id.coupon_id.code for step in steps if step.participant_id.coupon_id}
        )

    def _run_email(self, steps):
        node = self.with_context(marketing_coupon_codes=self._coupon_codes_context(steps))
        return super(MarketingScenarioNode, node)._run_email(steps)

    def _run_sms(self, steps):
        node = self.with_context(marketing_coupon_codes=self._coupon_codes_context(steps))
        return super(MarketingScenarioNode, node)._run_sms(steps)

    # Checks and canvas ------------------------------------------------------

    def _coupon_problems(self):
        if not self.coupon_list_id:
            return [self.env._("choose the coupon list")]
        if self.coupon_list_id.company_id != self.scenario_id.company_id:
            return [self.env._("the coupon list belongs to another company")]
        return []

    def _coupon_rights(self, user):
        """The codes are claimed in SQL: the responsible must be allowed to change the list by hand."""
        coupon_list = self.coupon_list_id.with_user(user)
        if coupon_list and not coupon_list.has_access("write"):
            return [
                self.env._(
                    "%(user)s may not hand out the codes of %(list)s", user=user.name, list=self.coupon_list_id.name
                )
            ]
        return []

    def _coupon_description(self):
        coupon_list = self.coupon_list_id
        if not coupon_list:
            return self.env._("No coupon list chosen")
        return self.env._("%(list)s (%(left)s left)", list=coupon_list.name, left=coupon_list.available_count)

    def _coupon_stats(self, branch_counts):
        return [
            *self._flow_stats_action(branch_counts),
            ("redeemed", self.env._("Redeemed"), self.coupon_redeemed_count),
        ]
