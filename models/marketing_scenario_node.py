from collections import defaultdict

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError

from ..utils.constants import BRANCHES
from ..utils.constants import STEP_STATES
from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import parse_params_filter

NODE_KINDS = [("action", "Action"), ("wait", "Wait"), ("condition", "Condition"), ("split", "Split")]
# What a node type is when its family leaves something out (see _node_type_info).
NODE_TYPE_DEFAULTS = {
    "family": "",
    "kind": "action",
    "icon": "fa-circle-o",
    "fields": (),
    "branches": ("always",),
    "problems": None,
    "constant_due": None,
    "due": None,
    "handler": None,
    "describe": None,
    "badges": None,
    "stats": "_flow_stats_action",
    "rights": None,
    "contact_access": "read",
    "chained": True,
    "stored_after_run": False,
}


class MarketingScenarioNode(models.Model):
    """A node of a scenario's tree: where it sits, and what every kind of node shares.

    The kinds (``node_type``) come in families, one file each in
    ``models/scenario_node/``: each adds its kinds to ``node_type`` with
    ``selection_add`` and describes them in ``_node_type_info()``, the way
    ``ir.actions.server`` runs ``_run_action_<state>``. Another module adds a
    kind the same way.
    """

    _name = "marketing.scenario.node"
    _description = "Scenario Node"
    _order = "sequence, id"

    name = fields.Char(translate=True)
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade", index=True)
    scenario_state = fields.Selection(related="scenario_id.state")
    company_id = fields.Many2one(related="scenario_id.company_id", store=True, index=True)
    parent_id = fields.Many2one(
        "marketing.scenario.node",
        string="After",
        ondelete="cascade",
        index=True,
        domain="[('scenario_id', '=', scenario_id), ('id', '!=', id)]",
        help="Empty: the node runs as soon as a contact enters.",
    )
    parent_type = fields.Selection(related="parent_id.node_type", string="Parent Type")
    child_ids = fields.One2many("marketing.scenario.node", "parent_id", string="Next Nodes")
    branch = fields.Selection(BRANCHES, required=True, default="always")
    split_weight = fields.Integer(string="Arm Weight", default=50, help="Share of the split's contacts on this arm.")
    # The families add their kinds (models/scenario_node/).
    node_type = fields.Selection([], string="Type", required=True, default="wait")
    kind = fields.Selection(NODE_KINDS, compute="_compute_kind", store=True)

    # Statistics (test runs excluded)
    scheduled_count = fields.Integer(string="Scheduled", compute="_compute_statistics")
    processed_count = fields.Integer(string="Processed", compute="_compute_statistics")
    error_count = fields.Integer(string="Errors", compute="_compute_statistics")
    skipped_count = fields.Integer(string="Skipped", compute="_compute_statistics")
    canceled_count = fields.Integer(string="Canceled", compute="_compute_statistics")
    skipped_reasons = fields.Text(compute="_compute_statistics")
    arm_share = fields.Float(
        string="Arm Share (%)", compute="_compute_statistics", help="Share of the split's contacts sent down this arm."
    )
    drop_off_rate = fields.Float(
        string="Drop-off (%)", compute="_compute_statistics", help="Contacts of the previous node that never got here."
    )

    # ------------------------------------------------------------------
    # What a kind of node is
    # ------------------------------------------------------------------

    @api.model
    def _node_type_info(self):
        """``{node_type: info}`` for every kind of node; each family adds its own.

        The keys of an info (those left out take ``NODE_TYPE_DEFAULTS``):

        - ``family``: the file of ``models/scenario_node/`` the kind belongs to;
        - ``kind``: action, wait, condition or split (filters, canvas colours);
        - ``icon``: the canvas's Font Awesome icon;
        - ``fields``: the settings the node form shows for this kind;
        - ``branches``: the branches the nodes after it take (``yes``/``no``
          after a condition, ``arm`` after a split, else ``always``);
        - ``problems``: method returning what is missing for the node to run, as sentences;
        - ``constant_due``: method ``(now)`` giving the due time when it is the
          same for every contact, else None; no method: due at once;
        - ``due``: method ``(participants, now)`` giving each one's due time
          when ``constant_due`` gives None;
        - ``handler``: method running the node on a batch of steps (``_run_<node_type>`` if left out);
        - ``describe``: method giving the canvas's one-line description;
        - ``badges``: method giving the rules that apply to the node, shown on
          its card, as [{name, label, title}] (a frequency cap, quiet hours);
        - ``stats``: method giving the canvas's kind-specific statistics as (name, label, value);
        - ``rights``: method ``(user)`` giving what ``user``, as the scenario's
          responsible, may not do through the node, as sentences;
        - ``contact_access``: the access to the contacts the handler needs of
          the acting user: read (default), write, or post (a message or an activity);
        - ``chained``: whether a step of the kind due at once runs in the
          batch that made it (default), or waits for the next batch (a kind
          whose handler waits on the network);
        - ``stored_after_run``: whether such a chained step may run before its
          row exists, the row being inserted once it ran, in its final state
          (see ``marketing.scenario.step._execute_chained``): for a kind whose
          handler reads its steps only through the records it is given (their
          contact, participant and node), never in the queue's table, and
          writes none of their fields.
        """
        return {}

    def _node_type_spec(self, node_type=None):
        """The complete info of ``node_type`` (this node's by default), its label included."""
        node_type = node_type or self.node_type
        labels = dict(self._fields["node_type"]._description_selection(self.env))
        return {
            **NODE_TYPE_DEFAULTS,
            "label": labels.get(node_type, ""),
            "handler": f"_run_{node_type}",
            **self._node_type_info().get(node_type, {}),
        }

    def _node_types_with(self, key, test):
        """The node types whose info's ``key`` passes ``test``."""
        return [node_type for node_type, info in self._node_type_info().items() if test(info.get(key))]

    def _call_spec(self, key, *args, default=None):
        method = self._node_type_spec()[key]
        return getattr(self, method)(*args) if method else default

    @api.depends("node_type")
    def _compute_kind(self):
        info = self._node_type_info()
        for node in self:
            node.kind = info.get(node.node_type, {}).get("kind", NODE_TYPE_DEFAULTS["kind"])

    @api.depends("name", "node_type")
    def _compute_display_name(self):
        labels = dict(self._fields["node_type"]._description_selection(self.env))
        for node in self:
            node.display_name = node.name or labels.get(node.node_type, "")

    @api.model
    def _get_view(self, view_id=None, view_type="form", **options):
        """Show each kind's settings (``fields`` of its info) on the form, for the kinds of every family."""
        arch, view = super()._get_view(view_id, view_type, **options)
        if view_type == "form":
            shown_for = defaultdict(list)
            for node_type, info in self._node_type_info().items():
                for field_name in info.get("fields", ()):
                    shown_for[field_name].append(node_type)
            for field_name, node_types in shown_for.items():
                for node in arch.xpath(f"//group[@name='node_settings']//field[@name='{field_name}'][not(@invisible)]"):
                    node.set("invisible", f"node_type not in {node_types!r}")
        return arch, view

    def _compute_statistics(self):
        ids = [node_id for node_id in self.ids if node_id]
        counts = defaultdict(int)
        reasons = defaultdict(list)
        if ids:
            Step = self.env["marketing.scenario.step"]
            for node, state, count in Step._read_group(
                [("node_id", "in", ids), ("is_test", "=", False)], ["node_id", "state"], ["__count"]
            ):
                counts[node.id, state] = count
            for node, result, count in Step._read_group(
                [("node_id", "in", ids), ("is_test", "=", False), ("state", "=", "skipped")],
                ["node_id", "result"],
                ["__count"],
            ):
                reasons[node.id].append(f"{result or '?'}: {count}")
            self._add_purged_step_statistics(ids, counts, reasons)
        arm_counts, split_totals = defaultdict(int), defaultdict(int)
        split_ids = [node.parent_id.id for node in self if node.branch == "arm" and node.parent_id.id]
        if split_ids:
            for split, arm, count in self.env["marketing.scenario.step"]._read_group(
                [("node_id", "in", split_ids), ("is_test", "=", False), ("arm_node_id", "!=", False)],
                ["node_id", "arm_node_id"],
                ["__count"],
            ):
                arm_counts[arm.id] += count
                split_totals[split.id] += count
            for (split_id, arm_id), count in self._purged_step_totals("arm", split_ids).items():
                arm_counts[int(arm_id)] += count
                split_totals[split_id] += count
        reached = {node.id: sum(counts[node.id, state] for state, _label in STEP_STATES) for node in self}
        for node in self:
            node.scheduled_count = counts[node.id, "scheduled"]
            node.processed_count = counts[node.id, "done"]
            node.error_count = counts[node.id, "error"]
            node.skipped_count = counts[node.id, "skipped"]
            node.canceled_count = counts[node.id, "canceled"]
            node.skipped_reasons = "\n".join(sorted(reasons[node.id]))
            parent = node.parent_id
            if parent and parent.id in reached:
                parent_done = counts[parent.id, "done"] + counts[parent.id, "skipped"]
            elif parent:
                parent_done = parent.processed_count + parent.skipped_count
            else:
                parent_done = 0
            node.drop_off_rate = 100.0 * max(parent_done - reached[node.id], 0) / parent_done if parent_done else 0.0
            split_total = split_totals.get(node.parent_id.id)
            node.arm_share = 100.0 * arm_counts.get(node.id, 0) / split_total if split_total else 0.0

    # Drill-down ----------------------------------------------------------

    def _steps_domain(self, which=None):
        """The real steps behind one of the node's counts (a step state); families add their own counts."""
        self.ensure_one()
        domain = [("node_id", "=", self.id), ("is_test", "=", False)]
        if which in dict(self.env["marketing.scenario.step"]._fields["state"].selection):
            return [*domain, ("state", "=", which)]
        if which:
            raise UserError(self.env._("Unknown step count: %(which)s", which=which))
        return domain

    def action_view_steps(self):
        """The steps of one count of this node; the count is the context key ``step_count``."""
        self.ensure_one()
        which = self.env.context.get("step_count")
        action = self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_step"
        )
        action["name"] = self.display_name
        action["domain"] = self._steps_domain(which)
        action["context"] = {}
        return action

    # ------------------------------------------------------------------
    # Constraints and editing rules
    # ------------------------------------------------------------------

    @api.constrains("parent_id", "branch", "scenario_id")
    def _check_tree(self):
        if self._has_cycle():
            raise ValidationError(self.env._("A node cannot come after itself (the tree has a loop)."))
        for node in self:
            parent = node.parent_id
            if parent and parent.scenario_id != node.scenario_id:
                raise ValidationError(
                    self.env._("%(node)s: its previous node belongs to another scenario.", node=node.display_name)
                )
            parent_branches = parent._node_type_spec()["branches"] if parent else ("always",)
            if node.branch in ("yes", "no") and node.branch not in parent_branches:
                raise ValidationError(
                    self.env._(
                        "%(node)s: the branches Yes and No only follow a condition or a wait for an event.",
                        node=node.display_name,
                    )
                )
            if (node.branch == "arm") != ("arm" in parent_branches):
                raise ValidationError(
                    self.env._(
                        "%(node)s: the nodes after a random split are its arms (branch 'Split arm'), "
                        "and only they are.",
                        node=node.display_name,
                    )
                )
            if node.branch == "arm" and node.split_weight <= 0:
                raise ValidationError(self.env._("%(node)s: an arm weighs more than 0.", node=node.display_name))

    def _check_params_filter(self, filter_field, type_field):
        """Raise a ValidationError naming the node and the field when a parameters filter does not parse."""
        for node in self:
            try:
                parse_params_filter(node[filter_field], node[type_field].params_structure)
            except ParamsFilterError as error:
                raise ValidationError(
                    self.env._(
                        "%(node)s, %(field)s: %(error)s",
                        node=node.display_name,
                        field=node._fields[filter_field].string,
                        error=error,
                    )
                ) from error

    @api.onchange("parent_id")
    def _onchange_parent_id(self):
        parent_branches = self.parent_id._node_type_spec()["branches"] if self.parent_id else ("always",)
        if "arm" in parent_branches:
            self.branch = "arm"
        elif "yes" in parent_branches:
            self.branch = self.branch if self.branch in ("yes", "no") else "yes"
        else:
            self.branch = "always"

    def _check_editable(self):
        blocker = self.scenario_id._node_edit_blocker()
        if blocker:
            raise UserError(blocker)

    @api.model_create_multi
    def create(self, vals_list):
        nodes = super().create(vals_list)
        nodes._check_editable()
        return nodes

    def write(self, vals):
        self._check_editable()
        result = super().write(vals)
        if "scenario_id" in vals:
            self._check_editable()
        if vals.get("active") is False:
            self._cancel_scheduled_steps(self.env._("Node archived"))
        return result

    @api.ondelete(at_uninstall=False)
    def _unlink_except_scheduled(self):
        self._check_editable()
        # Deleting a node deletes the nodes after it (and their steps): none may hold a scheduled step.
        subtree = self.with_context(active_test=False).search([("id", "child_of", self.ids)])
        busy = self.env["marketing.scenario.step"].search_count(
            [("node_id", "in", subtree.ids), ("state", "=", "scheduled")], limit=1
        )
        if busy:
            raise UserError(
                self.env._(
                    "Some contacts are scheduled on these nodes: archive them instead, their steps are then "
                    "canceled with the reason."
                )
            )

    def _cancel_scheduled_steps(self, reason):
        steps = self.env["marketing.scenario.step"].search([("node_id", "in", self.ids), ("state", "=", "scheduled")])
        if not steps:
            return
        # sudo: the queue is the engine's; marketing users only read it. Bounded
        # to the scheduled steps of the nodes being archived.
        steps.sudo().write({"state": "canceled", "result": reason, "processed_at": fields.Datetime.now()})
        steps.participant_id._complete_if_done()

    def _configuration_problems(self):
        """What is missing for this node to run, as sentences."""
        self.ensure_one()
        problems = list(self._call_spec("problems", default=[]))
        if self.parent_id and not self.parent_id.active:
            problems.append(self.env._("its previous node is archived"))
        if self.scenario_id.user_id:
            problems.extend(self._rights_problems(self.scenario_id.user_id))
        return problems

    # Rights of the responsible user ----------------------------------------

    def _rights_problems(self, user):
        """What ``user``, as the responsible of this node's scenario, may not do through it, as sentences."""
        self.ensure_one()
        if not user:
            return [self.env._("the scenario has no responsible user")]
        return self._call_spec("rights", user, default=[])

    def _check_rights(self, steps):
        """Raise with the reason when the acting user may not do this node's side effects on these contacts.

        The handlers that write through SQL or as superuser (tags, lists,
        blacklists, activities) rely on it: the user's rights are checked
        once for the whole batch, on the model and on its contacts' records
        (read for segmenting, write or post for the others).
        """
        problems = self._rights_problems(self.env.user)
        if problems:
            raise AccessError("; ".join(problems))
        partners = steps.partner_id
        access = self._node_type_spec()["contact_access"]
        if access == "post":
            access = getattr(partners, "_mail_post_access", "write")
        partners.check_access(access)

    def _ancestors(self):
        ancestors = self.browse()
        node = self.parent_id
        while node and node not in ancestors:
            ancestors |= node
            node = node.parent_id
        return ancestors

    # ------------------------------------------------------------------
    # Scheduling
    # ------------------------------------------------------------------

    def _constant_due(self, now):
        """When this node's steps are due if it is the same for every contact (naive UTC), else None."""
        self.ensure_one()
        return self._call_spec("constant_due", now, default=now)

    def _due_dates(self, participants, now):
        """When each participant's step of this node is due (naive UTC)."""
        self.ensure_one()
        constant = self._constant_due(now)
        if constant is not None:
            return dict.fromkeys(participants.ids, constant)
        return self._call_spec("due", participants, now)

    def _children_for(self, branch, arm_node_id=None):
        self.ensure_one()
        children = self.child_ids  # active ones only: archived nodes are skipped
        if "arm" in self._node_type_spec()["branches"]:
            return children.filtered(lambda child: child.id == arm_node_id)
        return children.filtered(lambda child: child.branch in ("always", branch))

    # ------------------------------------------------------------------
    # Handlers: each runs on every step of this node in the batch at once and
    # returns {step id: {"state": done|skipped|error|retry, "branch", "result", ...}};
    # "wake": the XML id of a cron to trigger once the batch commits (a message queue).
    # ------------------------------------------------------------------

    def _run_steps(self, steps, actor=None):
        """Run the steps with the rights of ``actor``, by default the scenario's responsible user.

        The handler works in the actor's environment, in the scenario's
        company: what it reads and writes through the ORM is checked against
        the actor's rights and record rules, and the side effects it makes
        as superuser or through SQL are checked first (``_check_rights``).
        """
        self.ensure_one()
        actor = actor or self.scenario_id.user_id
        if not actor:
            raise AccessError(self.env._("The scenario has no responsible user: nobody to act for."))
        node = self.with_user(actor).with_company(self.scenario_id.company_id)
        steps = steps.with_env(node.env)
        node._check_rights(steps)
        return node._call_spec("handler", steps)

    @staticmethod
    def _done(steps, result=None, branch="always", **extra):
        return {step.id: {"state": "done", "branch": branch, "result": result, **extra} for step in steps}

    @staticmethod
    def _skipped(steps, reason):
        return {step.id: {"state": "skipped", "branch": "always", "result": reason} for step in steps}

    def _skip_without_email(self, steps):
        """Skip the steps whose contact has no valid email: (their outcomes, the other steps)."""
        without_email = steps.filtered(lambda step: not step.partner_id.email_normalized)
        return self._skipped(without_email, self.env._("No valid email address")), steps - without_email

    # ------------------------------------------------------------------
    # Flow canvas
    # ------------------------------------------------------------------

    def _flow_cards(self):
        """The canvas's card of each node: kind, description, place in the tree and live statistics.

        Batch method: the statistics, the related records and the branch counts
        are read once for the whole recordset, whatever its size.
        """
        branch_counts = self._flow_branch_counts()
        cards = []
        for node in self:
            spec = node._node_type_spec()
            cards.append(
                {
                    "id": node.id,
                    "name": node.name or spec["label"],
                    "node_type": node.node_type,
                    "type_label": spec["label"],
                    "kind": node.kind,
                    "icon": spec["icon"],
                    "description": node._call_spec("describe", default=""),
                    "badges": node._call_spec("badges", default=[]),
                    "parent_id": node.parent_id.id or False,
                    "branch": node.branch,
                    "split_weight": node.split_weight,
                    "arm_share": round(node.arm_share, 1),
                    "active": node.active,
                    "stats": node._flow_stats(branch_counts),
                }
            )
        return cards

    def _flow_branch_counts(self):
        """Done steps of the nodes with yes/no branches by the branch they took: {(node id, branch): n}."""
        branching = self.filtered(lambda node: "yes" in node._node_type_spec()["branches"])
        if not branching:
            return {}
        groups = self.env["marketing.scenario.step"]._read_group(
            [
                ("node_id", "in", branching.ids),
                ("is_test", "=", False),
                ("state", "=", "done"),
                ("branch", "in", ("yes", "no")),
            ],
            ["node_id", "branch"],
            ["__count"],
        )
        counts = defaultdict(int, {(node.id, branch): count for node, branch, count in groups})
        for key, count in self._purged_step_totals("branch", branching.ids).items():
            counts[key] += count
        return dict(counts)

    # Figures of the purged runs, kept per day (marketing.scenario.daily) -----

    def _purged_step_totals(self, measure, node_ids):
        """{(node id, detail): count} of one measure of the steps the retention purge deleted."""
        return self.env["marketing.scenario.daily"]._node_totals(measure, node_ids)

    def _add_purged_step_statistics(self, node_ids, counts, reasons):
        """Add the purged steps to the live ones: ``counts`` by (node id, state), ``reasons`` of the skipped."""
        for key, count in self._purged_step_totals("step_state", node_ids).items():
            counts[key] += count
        purged_reasons = self._purged_step_totals("skipped_result", node_ids)
        if purged_reasons:
            # The live and the purged steps skipped for one reason make one line.
            merged = defaultdict(int, purged_reasons)
            for node_id in node_ids:
                for line in reasons.pop(node_id, []):
                    reason, _sep, count = line.rpartition(": ")
                    merged[node_id, reason] += int(count)
            for (node_id, reason), count in merged.items():
                reasons[node_id].append(f"{reason}: {count}")

    def _flow_stats(self, branch_counts):
        """The statistics that tell how this kind of node is doing, as [{name, label, value, tone}]."""
        self.ensure_one()
        stats = self._call_spec("stats", branch_counts)
        if self.skipped_count:
            stats.append(("skipped", self.env._("Skipped"), self.skipped_count))
        if self.error_count:
            stats.append(("error", self.env._("Errors"), self.error_count))
        danger = {"error", "bounced"}
        return [
            {"name": name, "label": label, "value": value, "tone": "danger" if name in danger else ""}
            for name, label, value in stats
        ]

    def _flow_stats_action(self, branch_counts):
        stats = []
        if self.kind == "action" and self.scheduled_count:
            stats.append(("scheduled", self.env._("Scheduled"), self.scheduled_count))
        stats.append(("processed", self.env._("Done"), self.processed_count))
        return stats

    def _flow_stats_branches(self, branch_counts):
        return [
            ("yes", self.env._("Yes"), branch_counts.get((self.id, "yes"), 0)),
            ("no", self.env._("No"), branch_counts.get((self.id, "no"), 0)),
        ]
