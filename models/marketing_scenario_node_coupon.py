"""The node kind "Give a coupon": everything it is, in one place.

An ``_inherit`` of ``marketing.scenario.node`` that adds the kind with
``selection_add`` and plugs into the node's overridable methods (handler by
name, configuration problems, canvas card and description, message context).
"""

import json

from odoo import fields
from odoo import models
from odoo.tools import SQL

COUPON_ICON = "fa-ticket"


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

    def _configuration_problems(self):
        problems = super()._configuration_problems()
        if self.node_type == "coupon":
            if not self.coupon_list_id:
                problems.insert(0, self.env._("choose the coupon list"))
            elif self.coupon_list_id.company_id != self.scenario_id.company_id:
                problems.insert(0, self.env._("the coupon list belongs to another company"))
        return problems

    def _flow_description(self):
        if self.node_type != "coupon":
            return super()._flow_description()
        coupon_list = self.coupon_list_id
        if not coupon_list:
            return self.env._("No coupon list chosen")
        return self.env._("%(list)s (%(left)s left)", list=coupon_list.name, left=coupon_list.available_count)

    def _flow_cards(self):
        cards = super()._flow_cards()
        coupon_nodes = {node.id: node for node in self if node.node_type == "coupon"}
        for card in cards:
            node = coupon_nodes.get(card["id"])
            if node:
                card["icon"] = COUPON_ICON
                card["stats"].append(
                    {
                        "name": "redeemed",
                        "label": self.env._("Redeemed"),
                        "value": node.coupon_redeemed_count,
                        "tone": "",
                    }
                )
        return cards
