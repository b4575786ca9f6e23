import random

from odoo import api
from odoo import fields
from odoo import models

# A random split with fewer arms sends everybody the same way.
MIN_SPLIT_ARMS = 2


class MarketingScenarioNode(models.Model):
    """The flow itself: a random split into weighted arms, and the exit of the scenario."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[("condition",), ("split", "Random split"), ("exit", "Exit")],
        ondelete={"split": "cascade", "exit": "cascade"},
    )

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "split": {
                "family": "flow",
                "kind": "split",
                "icon": "fa-random",
                "branches": ("arm",),
                "problems": "_split_problems",
                "describe": "_split_description",
            },
            "exit": {
                "family": "flow",
                "icon": "fa-sign-out",
                "describe": "_exit_description",
            },
        }

    def _split_arms(self):
        return self.child_ids.filtered(lambda child: child.branch == "arm")

    def _split_problems(self):
        if len(self.child_ids) < MIN_SPLIT_ARMS:
            return [self.env._("a split needs at least two arms")]
        return []

    def _run_split(self, steps):
        arms = self._split_arms()
        if not arms:
            return self._skipped(steps, self.env._("No arm"))
        chosen = random.choices(arms.ids, weights=arms.mapped("split_weight"), k=len(steps))
        names = dict(zip(arms.ids, arms.mapped("display_name")))
        return {
            step.id: {"state": "done", "branch": "arm", "arm_node_id": arm_id, "result": names[arm_id]}
            for step, arm_id in zip(steps, chosen)
        }

    def _run_exit(self, steps):
        return self._done(steps, self.env._("Exited"), exit=True)

    def _split_description(self):
        return self.env._("%(count)s arms, weighted", count=len(self._split_arms()))

    def _exit_description(self):
        return self.env._("The contact leaves the scenario")
