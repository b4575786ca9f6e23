import random
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools import format_datetime

# A random split with fewer arms sends everybody the same way.
MIN_SPLIT_ARMS = 2
WINNER_METRICS = [("conversion", "Conversion rate"), ("click", "Click rate"), ("open", "Open rate")]
# metric: (successes, out of) in the figures of marketing.scenario._split_arm_figures
WINNER_METRIC_FIGURES = {
    "conversion": ("conversions", "entrants"),
    "click": ("clicked", "sent"),
    "open": ("opened", "sent"),
}


class MarketingScenarioNode(models.Model):
    """The flow itself: a random split into weighted arms, which may pick its winner, and the exit of the scenario."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[("condition",), ("split", "Random split"), ("exit", "Exit")],
        ondelete={"split": "cascade", "exit": "cascade"},
    )
    # A split that ends itself: once it has seen enough, its best arm takes everybody.
    split_pick_winner = fields.Boolean(
        string="Pick a Winner",
        help="After the days or the entrants per arm below, the arm with the best rate takes all later contacts.",
    )
    split_winner_metric = fields.Selection(WINNER_METRICS, string="Best By", default="conversion")
    split_decide_days = fields.Integer(
        string="Decide After (days)", help="Days after the split's first contact. 0: only the entrants count."
    )
    split_decide_entrants = fields.Integer(
        string="Or After (entrants per arm)",
        help="As soon as every arm had this many contacts. 0: only the days count.",
    )
    split_winner_id = fields.Many2one(
        "marketing.scenario.node",
        string="Winner",
        readonly=True,
        copy=False,
        ondelete="set null",
        help="The arm that takes every contact since the split decided.",
    )
    split_decided_at = fields.Datetime(string="Decided At", readonly=True, copy=False)
    split_decision = fields.Text(
        string="Decision", readonly=True, copy=False, help="Each arm's figures at the decision."
    )

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "split": {
                "family": "flow",
                "kind": "split",
                "icon": "fa-random",
                "fields": ("split_pick_winner", "split_winner_metric", "split_decide_days", "split_decide_entrants"),
                "branches": ("arm",),
                "problems": "_split_problems",
                "describe": "_split_description",
            },
            "exit": {
                "family": "flow",
                "stored_after_run": True,
                "icon": "fa-sign-out",
                "describe": "_exit_description",
            },
        }

    @api.constrains("split_pick_winner", "split_decide_days", "split_decide_entrants")
    def _check_split_decision(self):
        for node in self.filtered(lambda node: node.node_type == "split" and node.split_pick_winner):
            if node.split_decide_days < 0 or node.split_decide_entrants < 0:
                raise ValidationError(
                    self.env._("%(node)s: days and entrants per arm cannot be negative.", node=node.display_name)
                )
            if not (node.split_decide_days or node.split_decide_entrants):
                raise ValidationError(
                    self.env._(
                        "%(node)s, Pick a Winner: say after how many days or entrants per arm it decides.",
                        node=node.display_name,
                    )
                )

    def _split_arms(self):
        return self.child_ids.filtered(lambda child: child.branch == "arm")

    def _split_problems(self):
        problems = []
        if len(self.child_ids) < MIN_SPLIT_ARMS:
            problems.append(self.env._("a split needs at least two arms"))
        if (
            self.split_pick_winner
            and self.split_winner_metric == "conversion"
            and not self.scenario_id.objective_event_type_id
        ):
            problems.append(self.env._("picking the best conversion rate needs an objective on the scenario"))
        return problems

    def _run_split(self, steps):
        arms = self._split_arms()
        if not arms:
            return self._skipped(steps, self.env._("No arm"))
        winner = self._split_winner_now(arms)
        if winner:
            result = self.env._("%(arm)s (winner)", arm=winner.display_name)
            return {
                step.id: {"state": "done", "branch": "arm", "arm_node_id": winner.id, "result": result}
                for step in steps
            }
        chosen = random.choices(arms.ids, weights=arms.mapped("split_weight"), k=len(steps))
        names = dict(zip(arms.ids, arms.mapped("display_name")))
        return {
            step.id: {"state": "done", "branch": "arm", "arm_node_id": arm_id, "result": names[arm_id]}
            for step, arm_id in zip(steps, chosen)
        }

    # Picking the winner ---------------------------------------------------

    def _split_winner_now(self, arms):
        """The arm that takes every contact from now on, deciding it when the time has come; None meanwhile."""
        if not self.split_pick_winner:
            return None
        if self.split_winner_id in arms:
            return self.split_winner_id
        if self.split_winner_id:
            return None  # the winner was archived since: the other arms share the contacts again
        figures = self.env["marketing.scenario"]._split_arm_figures(self)
        if not self._split_decision_due(figures):
            return None
        # Two cron workers may reach the decision together: the first one takes it.
        self.env.cr.execute(
            SQL("SELECT split_winner_id FROM marketing_scenario_node WHERE id = %s FOR UPDATE", self.id)
        )
        self.invalidate_recordset(["split_winner_id", "split_decided_at", "split_decision"])
        if self.split_winner_id:
            return self.split_winner_id if self.split_winner_id in arms else None
        winner, decision = self._split_pick(arms, figures)
        # SQL: the engine writes the decision while the scenario runs, when marketers may not edit its nodes.
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_node
                   SET split_winner_id = %s, split_decided_at = %s, split_decision = %s
                 WHERE id = %s
                """,
                winner.id,
                fields.Datetime.now(),
                decision,
                self.id,
            )
        )
        self.invalidate_recordset(["split_winner_id", "split_decided_at", "split_decision"])
        return winner

    def _split_decision_due(self, figures):
        """Whether the split has seen enough: its days since the first contact, or its entrants on every arm."""
        entrants = [figure["entrants"] for figure in figures.values()]
        if self.split_decide_entrants and entrants and min(entrants) >= self.split_decide_entrants:
            return True
        if self.split_decide_days:
            self.env["marketing.scenario.step"].flush_model(["node_id", "processed_at", "state", "is_test"])
            self.env.cr.execute(
                SQL(
                    "SELECT min(processed_at) FROM marketing_scenario_step"
                    " WHERE node_id = %s AND state = 'done' AND NOT is_test",
                    self.id,
                )
            )
            first = self.env.cr.fetchone()[0]
            return bool(first) and fields.Datetime.now() >= first + timedelta(days=self.split_decide_days)
        return False

    def _split_pick(self, arms, figures):
        """(the arm with the best rate, the decision as text).

        A tie goes to the arm with more contacts, then to the first arm.
        """
        successes_key, total_key = WINNER_METRIC_FIGURES[self.split_winner_metric or "conversion"]

        def rate(arm):
            figure = figures[arm.id]
            return figure[successes_key] / figure[total_key] if figure[total_key] else 0.0

        ordered = arms.sorted(lambda arm: (arm.sequence, arm.id))
        winner = max(ordered, key=lambda arm: (rate(arm), figures[arm.id]["entrants"], -ordered.ids.index(arm.id)))
        metrics = dict(self._fields["split_winner_metric"]._description_selection(self.env))
        lines = []
        for arm in ordered:
            shown = f"{100 * rate(arm):.1f}"
            lines.append(
                self.env._(
                    "%(arm)s: %(rate)s %% (%(successes)s of %(total)s)",
                    arm=arm.display_name,
                    rate=shown,
                    successes=figures[arm.id][successes_key],
                    total=figures[arm.id][total_key],
                )
            )
        lines.append(
            self.env._(
                "Winner by %(metric)s: %(arm)s",
                metric=metrics[self.split_winner_metric or "conversion"].lower(),
                arm=winner.display_name,
            )
        )
        return winner, "\n".join(lines)

    # Canvas -----------------------------------------------------------------

    def _flow_cards(self):
        cards = super()._flow_cards()
        for node, card in zip(self, cards):
            card["is_split_winner"] = node.branch == "arm" and node.parent_id.split_winner_id == node
        return cards

    def _split_description(self):
        arms = self.env._("%(count)s arms, weighted", count=len(self._split_arms()))
        if self.split_winner_id:
            return self.env._(
                "%(arms)s · winner %(arm)s since %(date)s",
                arms=arms,
                arm=self.split_winner_id.display_name,
                date=format_datetime(self.env, self.split_decided_at, dt_format="short"),
            )
        if not self.split_pick_winner:
            return arms
        metrics = dict(self._fields["split_winner_metric"]._description_selection(self.env))
        after = []
        if self.split_decide_days:
            after.append(self.env._("%(days)s days", days=self.split_decide_days))
        if self.split_decide_entrants:
            after.append(self.env._("%(count)s entrants per arm", count=self.split_decide_entrants))
        return self.env._(
            "%(arms)s · the best %(metric)s wins after %(after)s",
            arms=arms,
            metric=metrics[self.split_winner_metric or "conversion"].lower(),
            after=self.env._(" or ").join(after),
        )

    def _run_exit(self, steps):
        return self._done(steps, self.env._("Exited"), exit=True)

    def _exit_description(self):
        return self.env._("The contact leaves the scenario")
