from collections import defaultdict
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.tools import SQL

FIELD_UPDATE_TYPES = ("char", "text", "selection", "integer", "float", "boolean", "date", "datetime", "many2one")
# Contact fields no node writes, whoever the responsible user is: the identity
# used to log in and to be found (email, external id), the company structure,
# the links to users, and what access rights or accounting decide.
FIELD_UPDATE_FORBIDDEN_NAMES = {
    "email",
    "email_normalized",
    "company_id",
    "parent_id",
    "commercial_partner_id",
    "user_id",
    "user_ids",
    "partner_share",
    "employee",
    "active",
    "type",
    "vat",
    "company_registry",
    "marketing_external_id",
}
FIELD_UPDATE_FORBIDDEN_WORDS = ("email", "login", "password", "signup", "token", "user", "company", "share")
FIELD_UPDATE_FORBIDDEN_PREFIXES = ("property_", "engagement_", "marketing_", "credit", "debit", "bank", "account")
FIELD_UPDATE_FORBIDDEN_COMODELS = ("res.users", "res.company", "res.groups", "res.partner", "res.partner.bank")
FIELD_UPDATE_FORBIDDEN_MODULES = {"account", "base_vat", "auth_signup"}
# Server action types a responsible user who is not a system administrator may
# run: they write the contacts or post on them, and write nothing else.
SERVER_ACTION_SAFE_STATES = {"object_write", "mail_post", "followers", "remove_followers", "next_activity", "multi"}
# What a boolean contact field reads as true in a node's New Value.
TRUE_TEXTS = ("1", "true", "yes", "y")


class MarketingScenarioNode(models.Model):
    """Changes to the contact: tags, mailing lists, blacklists, score, a field, an activity, a server action."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[
            ("sms",),
            ("tag_add", "Add tags"),
            ("tag_remove", "Remove tags"),
            ("list_add", "Add to mailing list"),
            ("list_remove", "Remove from mailing list"),
            ("blacklist", "Blacklist"),
            ("score", "Change engagement score"),
            ("activity", "Schedule activity"),
            ("field_update", "Update contact field"),
            ("server_action", "Run server action"),
            ("exit",),
        ],
        ondelete={
            "tag_add": "cascade",
            "tag_remove": "cascade",
            "list_add": "cascade",
            "list_remove": "cascade",
            "blacklist": "cascade",
            "score": "cascade",
            "activity": "cascade",
            "field_update": "cascade",
            "server_action": "cascade",
        },
    )
    tag_ids = fields.Many2many("res.partner.category", string="Tags")
    mailing_list_id = fields.Many2one("mailing.list", ondelete="restrict")
    blacklist_email = fields.Boolean(default=True)
    blacklist_phone = fields.Boolean()
    score_delta = fields.Integer(string="Points")
    score_reason = fields.Char()
    activity_type_id = fields.Many2one("mail.activity.type", ondelete="restrict")
    activity_summary = fields.Char()
    activity_days = fields.Integer(string="Due In (days)", default=0)
    activity_user_id = fields.Many2one(
        "res.users", string="Fallback User", help="For contacts without a salesperson; empty: skip them."
    )
    field_id = fields.Many2one(
        "ir.model.fields",
        string="Contact Field",
        ondelete="cascade",
        domain=f"[('model', '=', 'res.partner'), ('store', '=', True), ('readonly', '=', False), "
        f"('ttype', 'in', {list(FIELD_UPDATE_TYPES)})]",
    )
    field_value = fields.Char(string="New Value")
    server_action_id = fields.Many2one(
        "ir.actions.server", ondelete="restrict", domain="[('model_id.model', '=', 'res.partner')]"
    )

    @api.model
    def _node_type_info(self):
        tags = {
            "family": "contact",
            "fields": ("tag_ids",),
            "rights": "_rights_segment",
            "problems": "_tag_problems",
            "describe": "_tag_description",
        }
        lists = {
            "family": "contact",
            "fields": ("mailing_list_id",),
            "rights": "_rights_lists",
            "problems": "_list_problems",
            "describe": "_list_description",
        }
        return {
            **super()._node_type_info(),
            "tag_add": {**tags, "icon": "fa-tag", "stored_after_run": True},
            "tag_remove": {**tags, "icon": "fa-tags", "stored_after_run": True},
            "list_add": {**lists, "icon": "fa-user-plus"},
            "list_remove": {**lists, "icon": "fa-user-times"},
            "blacklist": {
                "family": "contact",
                "icon": "fa-ban",
                "fields": ("blacklist_email", "blacklist_phone"),
                "rights": "_rights_blacklist",
                "problems": "_blacklist_problems",
                "describe": "_blacklist_description",
            },
            "score": {
                "family": "contact",
                "stored_after_run": True,
                "icon": "fa-star-half-o",
                "fields": ("score_delta", "score_reason"),
                "problems": "_score_problems",
                "describe": "_score_description",
            },
            "activity": {
                "family": "contact",
                "icon": "fa-tasks",
                "fields": ("activity_type_id", "activity_summary", "activity_days", "activity_user_id"),
                "rights": "_rights_edit_contacts",
                "contact_access": "post",
                "problems": "_activity_problems",
                "describe": "_activity_description",
            },
            "field_update": {
                "family": "contact",
                "icon": "fa-pencil",
                "fields": ("field_id", "field_value"),
                "rights": "_rights_field_update",
                "contact_access": "write",
                "problems": "_field_update_problems",
                "describe": "_field_update_description",
            },
            "server_action": {
                "family": "contact",
                "icon": "fa-cogs",
                "fields": ("server_action_id",),
                "rights": "_rights_server_action",
                "contact_access": "write",
                "problems": "_server_action_problems",
                "describe": "_server_action_description",
            },
        }

    @api.constrains("field_id", "field_value")
    def _check_field_value(self):
        for node in self.filtered(lambda node: node.node_type == "field_update" and node.field_id):
            refusal = node._field_update_refusal()
            if refusal:
                raise ValidationError(self.env._("%(node)s: %(refusal)s", node=node.display_name, refusal=refusal))
            node._field_update_value()

    # Rights of the responsible user ---------------------------------------

    def _field_update_refusal(self, field_record=None):
        """Why no node may write this contact field (the node's by default), or an empty string.

        Enforced by the server whatever the form offers: the field is a stored,
        writable, plain contact field, open to every user who may edit contacts.
        """
        # sudo: reading the field's definition (its modules), not data.
        field_record = (field_record or self.field_id).sudo()
        name = field_record.name or ""
        field = self.env["res.partner"]._fields.get(name)
        refused = self.env._("the field %(field)s cannot be changed by a scenario", field=name)
        if (
            field is None
            or field_record.model != "res.partner"
            or field.type not in FIELD_UPDATE_TYPES
            or not field.store
            or field.readonly
            or field.compute
            or field.groups
            or field.company_dependent
            or name.startswith("_")
        ):
            return refused
        if (
            name in FIELD_UPDATE_FORBIDDEN_NAMES
            or any(word in name for word in FIELD_UPDATE_FORBIDDEN_WORDS)
            or name.startswith(FIELD_UPDATE_FORBIDDEN_PREFIXES)
        ):
            return refused
        if field.type == "many2one" and (
            field.comodel_name in FIELD_UPDATE_FORBIDDEN_COMODELS or field.comodel_name.startswith("account.")
        ):
            return refused
        modules = set((field_record.modules or "").replace(" ", "").split(","))
        if modules & FIELD_UPDATE_FORBIDDEN_MODULES:
            return refused
        return ""

    def _server_action_refusal(self, user):
        """Why ``user`` may not have this node run its server action, or an empty string.

        Odoo checks the action's groups (or the right to write contacts) when
        it runs; on top of that, code, webhooks and record creation are for
        system administrators only, and a field written is one a field update
        node could write.
        """
        self.ensure_one()
        # sudo: server actions are readable by administrators only; this reads
        # the definition of the node's action to judge it, it runs nothing.
        action = self.server_action_id.sudo()
        if not action:
            return ""
        if action.model_id.model != "res.partner":
            return self.env._("the server action %(action)s is not on contacts", action=action.name)
        if action.groups_id and not action.groups_id & user.groups_id:
            return self.env._(
                "%(user)s is not in the groups allowed to run the server action %(action)s",
                user=user.name,
                action=action.name,
            )
        if user._is_system():
            return ""
        pending, seen = action, action.browse()
        while pending:
            current = pending[0]
            pending -= current
            if current in seen:
                continue
            seen |= current
            if current.state not in SERVER_ACTION_SAFE_STATES or (
                current.state == "multi" and current.child_ids.filtered(lambda child: child.model_id != action.model_id)
            ):
                return self.env._(
                    "the server action %(action)s runs code or changes other records: only a system administrator "
                    "may be responsible for a scenario that runs it",
                    action=current.name,
                )
            if current.state == "object_write":
                written = current.update_field_id.name
                if current.crud_model_id != action.model_id or "." in (current.update_path or ""):
                    return self.env._("the server action %(action)s writes other records", action=current.name)
                if current.evaluation_type != "value":
                    return self.env._(
                        "the server action %(action)s computes its value with code: only a system administrator "
                        "may be responsible for a scenario that runs it",
                        action=current.name,
                    )
                if not written or self._field_update_refusal(current.update_field_id):
                    return self.env._(
                        "the server action %(action)s writes the field %(field)s, which a scenario may not change",
                        action=current.name,
                        field=written or "?",
                    )
            pending |= current.child_ids
        return ""

    def _rights_edit_contacts(self, user):
        """Field updates, activities and server actions edit contacts: the user must be allowed to."""
        if self.env["res.partner"].with_user(user).has_access("write"):
            return []
        return [self.env._("%(user)s may not edit contacts", user=user.name)]

    def _rights_field_update(self, user):
        refusal = self.field_id and self._field_update_refusal()
        return [*self._rights_edit_contacts(user), *([refusal] if refusal else [])]

    def _rights_server_action(self, user):
        refusal = self.server_action_id and self._server_action_refusal(user)
        return [*self._rights_edit_contacts(user), *([refusal] if refusal else [])]

    def _rights_segment(self, user, model_name=None, refusal=None):
        """Segmenting the contacts he can read (tags, lists, blacklists) is what the marketing user group
        grants, without editing contacts; lists and blacklists need their own rights on top."""
        problems = []
        if not user.has_group("marketing_event_automation.group_marketing_automation_user"):
            problems.append(self.env._("%(user)s is not a marketing automation user", user=user.name))
        if model_name and not self.env[model_name].with_user(user).has_access("create"):
            problems.append(refusal)
        return problems

    def _rights_lists(self, user):
        return self._rights_segment(
            user, "mailing.subscription", self.env._("%(user)s may not manage mailing lists", user=user.name)
        )

    def _rights_blacklist(self, user):
        return self._rights_segment(
            user, "mail.blacklist", self.env._("%(user)s may not blacklist addresses", user=user.name)
        )

    # Configuration problems -------------------------------------------------

    def _tag_problems(self):
        return [] if self.tag_ids else [self.env._("choose the tags")]

    def _list_problems(self):
        return [] if self.mailing_list_id else [self.env._("choose the mailing list")]

    def _blacklist_problems(self):
        if self.blacklist_email or self.blacklist_phone:
            return []
        return [self.env._("blacklist the email, the phone or both")]

    def _score_problems(self):
        if self.score_delta and self.score_reason:
            return []
        return [self.env._("give the points (not 0) and a reason")]

    def _activity_problems(self):
        return [] if self.activity_type_id else [self.env._("choose the activity type")]

    def _field_update_problems(self):
        return [] if self.field_id else [self.env._("choose the contact field")]

    def _server_action_problems(self):
        return [] if self.server_action_id else [self.env._("choose the server action")]

    # Handlers ---------------------------------------------------------------

    def _change_tags(self, partner_ids, add):
        """Add or remove this node's tags on the contacts with one statement on the relation table.

        The ORM would write the relation row by row and run the contacts'
        write overrides; a tag needs neither.
        """
        if not partner_ids or not self.tag_ids:
            return
        field = self.env["res.partner"]._fields["category_id"]
        self.env["res.partner"].flush_model(["category_id"])
        self.env["res.partner.category"].flush_model(["partner_ids"])
        names = {
            "table": SQL.identifier(field.relation),
            "partner": SQL.identifier(field.column1),
            "tag": SQL.identifier(field.column2),
            "partners": partner_ids,
            "tags": self.tag_ids.ids,
        }
        if add:
            query = SQL(
                "INSERT INTO %(table)s (%(partner)s, %(tag)s)"
                " SELECT partner_id, tag_id FROM unnest(%(partners)s::int[]) partner_id, unnest(%(tags)s::int[]) tag_id"
                " ON CONFLICT DO NOTHING",
                **names,
            )
        else:
            query = SQL(
                "DELETE FROM %(table)s WHERE %(partner)s = ANY(%(partners)s) AND %(tag)s = ANY(%(tags)s)", **names
            )
        self.env.cr.execute(query)
        self.env["res.partner"].invalidate_model(["category_id"])
        self.env["res.partner.category"].invalidate_model(["partner_ids"])

    def _run_tag_add(self, steps):
        self._change_tags(list(set(steps.partner_id.ids)), add=True)
        return self._done(steps, self._tag_names())

    def _run_tag_remove(self, steps):
        self._change_tags(list(set(steps.partner_id.ids)), add=False)
        return self._done(steps, self._tag_names())

    def _tag_names(self):
        return ", ".join(self.tag_ids.mapped("name"))

    def _run_list_add(self, steps):
        outcomes, sendable = self._skip_without_email(steps)
        if not sendable:
            return outcomes
        mailing_list = self.mailing_list_id
        # sudo: list membership is managed by the scenario, not by the user running it.
        Contact = self.env["mailing.contact"].sudo()
        Subscription = self.env["mailing.subscription"].sudo()
        partners_by_email = {}
        for partner in sendable.partner_id:
            partners_by_email.setdefault(partner.email_normalized, partner)
        contacts = Contact.search([("email_normalized", "in", list(partners_by_email))])
        contact_by_email = {}
        for contact in contacts:
            contact_by_email.setdefault(contact.email_normalized, contact)
        subscriptions = Subscription.search(
            [
                ("list_id", "=", mailing_list.id),
                ("contact_id", "in", [contact.id for contact in contact_by_email.values()]),
            ]
        )
        # Whoever left the list decides: the scenario does not sign them up again.
        refused = set(subscriptions.filtered("opt_out").contact_id.mapped("email_normalized"))
        subscribed = subscriptions.contact_id
        Subscription.create(
            [
                {"contact_id": contact.id, "list_id": mailing_list.id}
                for contact in contact_by_email.values()
                if contact not in subscribed
            ]
        )
        Contact.create(
            [
                {"name": partner.name, "email": partner.email, "list_ids": [(4, mailing_list.id)]}
                for email, partner in partners_by_email.items()
                if email not in contact_by_email
            ]
        )
        opted_out = sendable.filtered(lambda step: step.partner_id.email_normalized in refused)
        outcomes.update(self._skipped(opted_out, self.env._("Opted out of this list")))
        outcomes.update(self._done(sendable - opted_out, mailing_list.name))
        return outcomes

    def _run_list_remove(self, steps):
        emails = [email for email in steps.partner_id.mapped("email_normalized") if email]
        # sudo: see _run_list_add.
        subscriptions = (
            self.env["mailing.subscription"]
            .sudo()
            .search(
                [
                    ("list_id", "=", self.mailing_list_id.id),
                    ("contact_id.email_normalized", "in", emails),
                    ("opt_out", "=", False),
                ]
            )
        )
        subscriptions.write({"opt_out": True})
        removed = set(subscriptions.contact_id.mapped("email_normalized"))
        outcomes = {}
        for step in steps:
            if step.partner_id.email_normalized in removed:
                outcomes.update(self._done(step, self.mailing_list_id.name))
            else:
                outcomes.update(self._skipped(step, self.env._("Not on the list")))
        return outcomes

    def _blacklist(self, model_name, field_name, values):
        # sudo: blacklists are technical; the scenario adds to them for its contacts.
        Blacklist = self.env[model_name].sudo().with_context(active_test=False)
        existing = Blacklist.search([(field_name, "in", values)])
        existing.filtered(lambda record: not record.active).write({"active": True})
        known = set(existing.mapped(field_name))
        Blacklist.create([{field_name: value} for value in dict.fromkeys(values) if value not in known])

    def _run_blacklist(self, steps):
        outcomes = {}
        emails, phones = [], []
        for step in steps:
            partner = step.partner_id
            parts = []
            if self.blacklist_email and partner.email_normalized:
                emails.append(partner.email_normalized)
                parts.append(partner.email_normalized)
            if self.blacklist_phone and partner.phone_sanitized:
                phones.append(partner.phone_sanitized)
                parts.append(partner.phone_sanitized)
            if parts:
                outcomes.update(self._done(step, ", ".join(parts)))
            else:
                outcomes.update(self._skipped(step, self.env._("Nothing to blacklist")))
        if emails:
            self._blacklist("mail.blacklist", "email", emails)
        if phones:
            self._blacklist("phone.blacklist", "number", phones)
        return outcomes

    def _run_score(self, steps):
        deltas = defaultdict(int)
        for step in steps:
            deltas[step.partner_id.id] += self.score_delta
        changes = self.env["res.partner"]._marketing_change_score(
            dict(deltas),
            self.score_reason,
            "scenario",
            origin_ref=self,
            # A scenario's score change moves only its company's score triggers.
            event_company_id=self.scenario_id.company_id.id,
        )
        return {
            step.id: {
                "state": "done",
                "branch": "always",
                "result": f"{self.score_delta:+d} → {changes.get(step.partner_id.id, (None, '?'))[1]}",
            }
            for step in steps
        }

    def _run_activity(self, steps):
        outcomes = {}
        fallback = self.activity_user_id
        values = []
        deadline = fields.Date.context_today(self) + timedelta(days=self.activity_days)
        model_id = self.env["ir.model"]._get_id("res.partner")
        for step in steps:
            user = step.partner_id.user_id or fallback
            if not user:
                outcomes.update(self._skipped(step, self.env._("No salesperson")))
                continue
            values.append(
                {
                    "res_model_id": model_id,
                    "res_id": step.partner_id.id,
                    "activity_type_id": self.activity_type_id.id,
                    "summary": self.activity_summary or self.activity_type_id.name,
                    "user_id": user.id,
                    "date_deadline": deadline,
                }
            )
            outcomes.update(self._done(step, user.name))
        # sudo: the activity is assigned to the salesperson whoever runs the scenario.
        self.env["mail.activity"].sudo().create(values)
        return outcomes

    def _field_update_value(self):
        field = self.env["res.partner"]._fields.get(self.field_id.name)
        if field is None:
            raise ValidationError(self.env._("%(field)s: no such contact field.", field=self.field_id.name))
        text = (self.field_value or "").strip()
        try:
            if not text:
                return False
            if field.type == "integer":
                return int(text)
            if field.type == "float":
                return float(text)
            if field.type == "boolean":
                return text.lower() in TRUE_TEXTS
            if field.type == "date":
                return fields.Date.to_date(text)
            if field.type == "datetime":
                return fields.Datetime.to_datetime(text)
            if field.type == "many2one":
                record = self.env[field.comodel_name].browse(int(text)).exists()
                if not record:
                    raise ValueError(f"no {field.comodel_name} with id {text}")
                return record.id
            if field.type == "selection":
                allowed = [key for key, _label in field._description_selection(self.env)]
                if text not in allowed:
                    raise ValueError(f"choose one of {', '.join(map(str, allowed))}")
            return text
        except ValueError as error:
            raise ValidationError(
                self.env._(
                    "New Value of %(node)s: %(value)r does not fit the field %(field)s (%(error)s).",
                    node=self.display_name,
                    value=text,
                    field=self.field_id.field_description,
                    error=error,
                )
            ) from error

    def _run_field_update(self, steps):
        value = self._field_update_value()
        # As the acting user: the ORM checks his rights on the contacts and the field.
        steps.partner_id.write({self.field_id.name: value})
        return self._done(steps, self._field_update_text())

    def _run_server_action(self, steps):
        # Runs as the acting user: Odoo checks the action's groups or the
        # right to write these contacts, _check_rights the kind of action.
        partner_ids = steps.partner_id.ids
        self.server_action_id.with_context(
            active_model="res.partner", active_ids=partner_ids, active_id=partner_ids[0]
        ).run()
        return self._done(steps, self.server_action_id.name)

    # Flow canvas ------------------------------------------------------------

    def _tag_description(self):
        return self._tag_names() or self.env._("No tag chosen")

    def _list_description(self):
        return self.mailing_list_id.name or self.env._("No list chosen")

    def _blacklist_description(self):
        parts = [self.env._("email")] * self.blacklist_email + [self.env._("phone")] * self.blacklist_phone
        return ", ".join(parts) or self.env._("Nothing chosen")

    def _score_description(self):
        return f"{self.score_delta:+d} {self.score_reason or ''}".strip()

    def _activity_description(self):
        return self.activity_summary or self.activity_type_id.name or self.env._("No activity type chosen")

    def _field_update_description(self):
        if not self.field_id:
            return self.env._("No field chosen")
        return self._field_update_text()

    def _field_update_text(self):
        return f"{self.field_id.field_description} = {self.field_value or ''}"

    def _server_action_description(self):
        return self.server_action_id.name or self.env._("No server action chosen")
