import json
from collections import defaultdict

import psycopg2

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError

TRANSFER_FORMAT = "marketing_event_automation.scenario"
TRANSFER_VERSION = 1
# Bounds of an imported document: a real scenario is a few dozen nodes and
# mailings of some kilobytes; anything far larger is a mistake or an attack.
MAX_IMPORT_BYTES = 2 * 1024 * 1024
MAX_IMPORT_NODES = 500
MAX_TEXT_LENGTH = 500 * 1024
MAX_REPORTED_PROBLEMS = 50

# The scenario's settings a document carries; who is responsible, the company
# and the state are the importer's.
SCENARIO_SETTINGS = (
    "name",
    "timezone",
    "trigger_type",
    "trigger_at",
    "trigger_event_type_id",
    "trigger_params_filter",
    "correlation_param",
    "repeat_interval",
    "repeat_unit",
    "repeat_hour",
    "repeat_start",
    "repeat_until",
    "score_operator",
    "score_threshold",
    "trigger_segment_id",
    "exit_on_segment_left",
    "audience_segment_id",
    "audience_domain",
    "entry_policy",
    "exit_event_type_ids",
    "objective_event_type_id",
    "objective_days",
    "exit_on_objective",
    "objective_prompt_skipped",
    "control_group_percent",
    "capped_message_policy",
)
NODE_PLACEMENT = ("ref", "parent", "branch", "node_type", "name", "sequence", "split_weight", "settings", "mailing")
# Secrets stay in their database: an imported webhook needs a new signing secret.
SECRET_NODE_FIELDS = {"webhook_secret"}
MAILING_CONTENT = {
    "email": ("subject", "preview", "email_from", "body_arch", "body_html"),
    "sms": ("body_plaintext", "sms_allow_unsubscribe"),
}
# How a document names the records of another database: by key, by name, by login.
REFERENCE_FIELDS = {
    "marketing.event.type": "key",
    "res.users": "login",
    "ir.model.fields": "name",
}
# Definitions rather than data: looked up as superuser, then the node kinds'
# own rights checks decide whether the importer may use them.
DEFINITION_MODELS = {
    "ir.actions.server": [("model_id.model", "=", "res.partner")],
    "ir.model.fields": [("model", "=", "res.partner")],
}


class ScenarioImportError(UserError):
    """An imported document that cannot become a scenario, with every reason found."""


class MarketingScenario(models.Model):
    """Export of a scenario as a JSON document, and its import into another database."""

    _inherit = "marketing.scenario"

    # ------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------

    def _transfer_export(self):
        """This scenario as a document: its settings, its active nodes as a tree, their mailings' content."""
        self.ensure_one()
        self.check_access("read")
        document = {
            "format": TRANSFER_FORMAT,
            "version": TRANSFER_VERSION,
            "scenario": {name: self._transfer_value(self, name) for name in SCENARIO_SETTINGS},
            "nodes": [],
        }
        nodes = self._transfer_nodes_in_order()
        refs = {node.id: index for index, node in enumerate(nodes, start=1)}
        Node = self.env["marketing.scenario.node"]
        for node in nodes:
            spec = node._node_type_spec()
            settings = {}
            for name in spec["fields"]:
                if name == "mailing_id" or name in SECRET_NODE_FIELDS:
                    continue
                if Node._fields[name].comodel_name == Node._name:
                    settings[name] = refs.get(node[name].id)
                else:
                    settings[name] = self._transfer_value(node, name)
            entry = {
                "ref": refs[node.id],
                "parent": refs.get(node.parent_id.id),
                "branch": node.branch,
                "node_type": node.node_type,
                "name": node.name or "",
                "sequence": node.sequence,
                "split_weight": node.split_weight,
                "settings": settings,
            }
            if node.node_type in MAILING_CONTENT and node.mailing_id:
                # sudo: the node's own mailing, which its scenario's builders edit without Email Marketing rights.
                mailing = node.mailing_id.sudo()
                entry["mailing"] = {name: mailing[name] or False for name in MAILING_CONTENT[node.node_type]}
            document["nodes"].append(entry)
        return document

    def _transfer_nodes_in_order(self):
        """The active nodes reachable from the trigger, parents before their children."""
        ordered = self.env["marketing.scenario.node"]
        pending = self.node_ids.sorted(lambda node: (node.sequence, node.id))
        while pending:
            ready = pending.filtered(lambda node, done=ordered: not node.parent_id or node.parent_id in done)
            if not ready:
                break  # the nodes after an archived node are not exported, as copy() does not copy them
            ordered |= ready
            pending -= ready
        return ordered

    @api.model
    def _transfer_value(self, record, name):
        field = record._fields[name]
        value = record[name]
        if field.type == "many2one":
            return self._transfer_reference(value) if value else False
        if field.type == "many2many":
            return [self._transfer_reference(item) for item in value]
        if field.type == "datetime":
            return fields.Datetime.to_string(value) if value else False
        if field.type == "date":
            return fields.Date.to_string(value) if value else False
        return value

    @api.model
    def _transfer_reference(self, record):
        key = REFERENCE_FIELDS.get(record._name, record._rec_name or "name")
        # sudo: the key of a record the exported scenario already points at (a server action's name).
        return record.sudo()[key]

    def action_export_json(self):
        """Download this scenario as a JSON document (Export)."""
        self.ensure_one()
        content = json.dumps(self._transfer_export(), indent=2, ensure_ascii=False, sort_keys=True)
        attachment = self.env["ir.attachment"].create(
            {
                "name": f"{self.name or 'scenario'}.json",
                "raw": content.encode(),
                "mimetype": "application/json",
                "res_model": self._name,
                "res_id": self.id,
            }
        )
        return {"type": "ir.actions.act_url", "url": f"/web/content/{attachment.id}?download=true", "target": "self"}

    # ------------------------------------------------------------------
    # Import
    # ------------------------------------------------------------------

    def action_open_import(self):
        # A header button of the kanban and list: called on the selected scenarios, or none.
        return self.env["ir.actions.act_window"]._for_xml_id(
            "marketing_event_automation.action_marketing_scenario_import_wizard"
        )

    @api.model
    def _transfer_import_bytes(self, raw):
        """Create a draft scenario from a document's bytes; raise ScenarioImportError naming every problem."""
        if isinstance(raw, str):
            raw = raw.encode()
        if len(raw) > MAX_IMPORT_BYTES:
            self._raise_import_problems(
                [
                    self.env._(
                        "The file is too large: %(size)s bytes, at most %(max)s.", size=len(raw), max=MAX_IMPORT_BYTES
                    )
                ]
            )
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            self._raise_import_problems([self.env._("The file is not JSON: %(error)s", error=error)])
        return self._transfer_import(document)

    @api.model
    def _transfer_import(self, document):
        """Create a draft scenario, in the current company and as the current user, from a document.

        Everything is checked before anything is created: the format, every
        setting's type, every node's kind, branch and place in the tree, and
        every record the document names. What the ORM refuses afterwards
        (rights, record rules, constraints) rolls the whole import back, and
        so does a node kind the importer may not use (``rights`` of the kinds).
        """
        problems = []
        plan = self._transfer_plan(document, problems)
        if problems:
            self._raise_import_problems(problems)
        try:
            with self.env.cr.savepoint():
                scenario = self._transfer_create(plan)
                rights = [
                    f"{node.display_name}: {problem}"
                    for node in scenario.node_ids
                    for problem in node._rights_problems(self.env.user)
                ]
                if rights:
                    raise ScenarioImportError("\n".join(rights))
        except ScenarioImportError as error:
            self._raise_import_problems(str(error).splitlines())
        except (AccessError, ValidationError, UserError, ValueError, psycopg2.Error) as error:
            self._raise_import_problems([str(error)])
        return scenario

    def _raise_import_problems(self, problems):
        shown = problems[:MAX_REPORTED_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(self.env._("... and %(count)s more.", count=len(problems) - len(shown)))
        raise ScenarioImportError(self.env._("The scenario cannot be imported:") + "\n- " + "\n- ".join(shown))

    # Checking the document ----------------------------------------------

    def _transfer_plan(self, document, problems):
        """The values to create, from a checked document; the problems found are appended to ``problems``."""
        if not isinstance(document, dict):
            problems.append(self.env._("The document must be a JSON object."))
            return None
        if document.get("format") != TRANSFER_FORMAT:
            problems.append(
                self.env._("format: this is no scenario export (expected %(format)s).", format=TRANSFER_FORMAT)
            )
            return None
        version = document.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            problems.append(self.env._("version: a whole number is expected."))
            return None
        if version > TRANSFER_VERSION:
            problems.append(
                self.env._(
                    "version: the file comes from a newer version of the module (format %(version)s, this one "
                    "reads up to %(max)s).",
                    version=version,
                    max=TRANSFER_VERSION,
                )
            )
            return None
        unknown = sorted(set(document) - {"format", "version", "scenario", "nodes"})
        if unknown:
            problems.append(self.env._("unknown keys: %(keys)s", keys=", ".join(map(str, unknown))))
        settings = document.get("scenario")
        nodes = document.get("nodes", [])
        if not isinstance(settings, dict):
            problems.append(self.env._("scenario: an object with the scenario's settings is expected."))
            settings = {}
        if not isinstance(nodes, list):
            problems.append(self.env._("nodes: a list is expected."))
            nodes = []
        if len(nodes) > MAX_IMPORT_NODES:
            problems.append(
                self.env._("nodes: %(count)s nodes, at most %(max)s.", count=len(nodes), max=MAX_IMPORT_NODES)
            )
            return None
        references = _References(self.env)
        scenario_values = self._transfer_values(
            self, SCENARIO_SETTINGS, settings, "scenario", references=references, problems=problems
        )
        if not isinstance(settings.get("name"), str) or not settings["name"].strip():
            problems.append(self.env._("scenario.name: a name is expected."))
        node_plans = self._transfer_node_plans(nodes, references, problems)
        references.resolve(problems)
        return {"scenario": scenario_values, "nodes": node_plans, "references": references}

    def _transfer_node_plans(self, nodes, references, problems):
        Node = self.env["marketing.scenario.node"]
        info = Node._node_type_info()
        branches = dict(Node._fields["branch"].selection)
        plans, refs = [], {}
        for index, entry in enumerate(nodes, start=1):
            where = f"nodes[{index}]"
            if not isinstance(entry, dict):
                problems.append(self.env._("%(where)s: an object is expected.", where=where))
                continue
            unknown = sorted(set(entry) - set(NODE_PLACEMENT))
            if unknown:
                problems.append(self.env._("%(where)s: unknown keys %(keys)s", where=where, keys=", ".join(unknown)))
            ref = entry.get("ref")
            if not _is_ref(ref):
                problems.append(
                    self.env._("%(where)s.ref: a number or a text naming the node is expected.", where=where)
                )
                continue
            if ref in refs:
                problems.append(self.env._("%(where)s.ref: %(ref)s names two nodes.", where=where, ref=ref))
                continue
            where = f"nodes[{index}] ({ref})"
            node_type = entry.get("node_type")
            if not isinstance(node_type, str) or node_type not in info:
                problems.append(
                    self.env._(
                        "%(where)s.node_type: unknown kind of node %(kind)s.", where=where, kind=json.dumps(node_type)
                    )
                )
                continue
            spec = Node._node_type_spec(node_type)
            parent = entry.get("parent")
            if parent is not None and not _is_ref(parent):
                problems.append(
                    self.env._("%(where)s.parent: the ref of another node or null is expected.", where=where)
                )
                parent = None
            branch = entry.get("branch", "always")
            if branch not in branches:
                problems.append(
                    self.env._("%(where)s.branch: unknown branch %(branch)s.", where=where, branch=json.dumps(branch))
                )
                branch = "always"
            values = {"node_type": node_type, "branch": branch}
            for name, kind in (("name", str), ("sequence", int), ("split_weight", int)):
                if name in entry:
                    value = entry[name]
                    if (
                        not isinstance(value, kind)
                        or isinstance(value, bool)
                        or (kind is str and len(value) > MAX_TEXT_LENGTH)
                    ):
                        problems.append(self.env._("%(where)s.%(name)s: wrong type.", where=where, name=name))
                    else:
                        values[name] = value
            settings = entry.get("settings", {})
            if not isinstance(settings, dict):
                problems.append(self.env._("%(where)s.settings: an object is expected.", where=where))
                settings = {}
            allowed = [name for name in spec["fields"] if name != "mailing_id" and name not in SECRET_NODE_FIELDS]
            node_links = {name for name in allowed if Node._fields[name].comodel_name == Node._name}
            unknown = sorted(set(settings) - set(allowed))
            if unknown:
                problems.append(
                    self.env._(
                        "%(where)s.settings: %(keys)s are no settings of a %(kind)s node.",
                        where=where,
                        keys=", ".join(unknown),
                        kind=spec["label"],
                    )
                )
            plain = [name for name in allowed if name not in node_links]
            values.update(
                self._transfer_values(
                    Node, plain, settings, f"{where}.settings", references=references, problems=problems
                )
            )
            links = {}
            for name in node_links:
                target = settings.get(name)
                if target is not None and target is not False and not _is_ref(target):
                    problems.append(
                        self.env._("%(where)s.settings.%(name)s: the ref of a node.", where=where, name=name)
                    )
                elif target not in (None, False):
                    links[name] = target
            mailing = entry.get("mailing")
            mailing_values = {}
            if mailing is not None:
                if node_type not in MAILING_CONTENT or not isinstance(mailing, dict):
                    problems.append(
                        self.env._("%(where)s.mailing: only an email or SMS node has a mailing.", where=where)
                    )
                else:
                    mailing_values = self._transfer_mailing(mailing, node_type, where, problems)
            refs[ref] = len(plans)
            plans.append(
                {
                    "ref": ref,
                    "parent": parent,
                    "values": values,
                    "links": links,
                    "mailing": mailing_values,
                    "where": where,
                }
            )
        for plan in plans:
            if plan["parent"] is not None and plan["parent"] not in refs:
                problems.append(
                    self.env._("%(where)s.parent: no node is named %(ref)s.", where=plan["where"], ref=plan["parent"])
                )
                plan["parent"] = None
            for name, target in plan["links"].items():
                if target not in refs:
                    problems.append(
                        self.env._(
                            "%(where)s.settings.%(name)s: no node is named %(ref)s.",
                            where=plan["where"],
                            name=name,
                            ref=target,
                        )
                    )
        # Every node must lead back to the trigger: a loop of parents never does.
        depth = {}
        for plan in plans:
            chain, current = [], plan
            while current is not None and current["ref"] not in depth and current["ref"] not in chain:
                chain.append(current["ref"])
                parent = current["parent"]
                current = plans[refs[parent]] if parent is not None and parent in refs else None
            if current is not None and current["ref"] in chain:
                problems.append(
                    self.env._("%(where)s: the nodes come after each other in a loop.", where=current["where"])
                )
                depth.update(dict.fromkeys(chain))
                continue
            base = -1 if current is None else depth[current["ref"]]
            for offset, ref in enumerate(reversed(chain), start=1):
                depth[ref] = None if base is None else base + offset
        for plan in plans:
            plan["depth"] = depth.get(plan["ref"])
        return plans

    def _transfer_mailing(self, mailing, node_type, where, problems):
        allowed = MAILING_CONTENT[node_type]
        unknown = sorted(set(mailing) - set(allowed))
        if unknown:
            problems.append(
                self.env._("%(where)s.mailing: unknown keys %(keys)s", where=where, keys=", ".join(unknown))
            )
        values = {}
        for name in allowed:
            if name not in mailing:
                continue
            value = mailing[name]
            if name == "sms_allow_unsubscribe":
                if not isinstance(value, bool):
                    problems.append(self.env._("%(where)s.mailing.%(name)s: true or false.", where=where, name=name))
                    continue
            elif (
                value is not False
                and value is not None
                and (not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH)
            ):
                problems.append(self.env._("%(where)s.mailing.%(name)s: a text is expected.", where=where, name=name))
                continue
            values[name] = value if name == "sms_allow_unsubscribe" else value or False
        return values

    @api.model
    def _transfer_values(self, model, names, data, where, *, references, problems):
        """The ORM values of ``names`` found in ``data``, each checked against its field's type."""
        values = {}
        if model._name == self._name:
            unknown = sorted(set(data) - set(names))
            if unknown:
                problems.append(
                    self.env._("%(where)s: unknown settings %(keys)s", where=where, keys=", ".join(unknown))
                )
        for name in names:
            if name not in data:
                continue
            field, value, label = model._fields[name], data[name], f"{where}.{name}"
            error = None
            if field.type in ("char", "text"):
                if value is False or value is None:
                    value = False
                elif not isinstance(value, str) or len(value) > MAX_TEXT_LENGTH:
                    error = self.env._("a text is expected")
            elif field.type == "integer":
                if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**31 - 1:
                    error = self.env._("a whole number is expected")
            elif field.type == "float":
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    error = self.env._("a number is expected")
            elif field.type == "boolean":
                if not isinstance(value, bool):
                    error = self.env._("true or false is expected")
            elif field.type == "selection":
                allowed = [key for key, _label in field._description_selection(self.env)]
                if value is False or value is None:
                    value = False
                elif value not in allowed:
                    error = self.env._(
                        "%(value)s is none of %(allowed)s", value=json.dumps(value), allowed=", ".join(allowed)
                    )
            elif field.type in ("date", "datetime"):
                if value is False or value is None:
                    value = False
                else:
                    try:
                        convert = fields.Date.to_date if field.type == "date" else fields.Datetime.to_datetime
                        if not isinstance(value, str):
                            raise ValueError(value)
                        value = convert(value)
                    except (ValueError, TypeError):
                        error = self.env._("a date (YYYY-MM-DD) or date and time (YYYY-MM-DD HH:MM:SS) is expected")
            elif field.type == "many2one":
                if value is False or value is None:
                    value = False
                elif not isinstance(value, str) or not value:
                    error = self.env._("the key or name of a record is expected")
                else:
                    value = references.want(field.comodel_name, value, label)
            elif field.type == "many2many":
                if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                    error = self.env._("a list of keys or names is expected")
                else:
                    value = [references.want(field.comodel_name, item, label) for item in value]
            else:
                error = self.env._("this kind of setting cannot be imported")
            if error:
                problems.append(f"{label}: {error}.")
            else:
                values[name] = value
        return values

    # Creating ------------------------------------------------------------

    def _transfer_create(self, plan):
        references = plan["references"]
        scenario_values = references.ids_in(plan["scenario"], self)
        scenario = self.create({**scenario_values, "company_id": self.env.company.id, "user_id": self.env.uid})
        Node = self.env["marketing.scenario.node"]
        created = {}
        levels = defaultdict(list)
        for node_plan in plan["nodes"]:
            levels[node_plan["depth"]].append(node_plan)
        for depth in sorted(levels):
            batch = levels[depth]
            nodes = Node.create(
                [
                    {
                        **references.ids_in(node_plan["values"], Node),
                        "scenario_id": scenario.id,
                        "parent_id": created[node_plan["parent"]].id if node_plan["parent"] is not None else False,
                    }
                    for node_plan in batch
                ]
            )
            for node_plan, node in zip(batch, nodes):
                created[node_plan["ref"]] = node
                if node_plan["mailing"]:
                    # As the importer, like editing the mailing by hand: Email Marketing's rights and its
                    # checks of dynamic content apply.
                    node.mailing_id.with_env(self.env).write(node_plan["mailing"])
        for node_plan in plan["nodes"]:
            if node_plan["links"]:
                created[node_plan["ref"]].write(
                    {name: created[target].id for name, target in node_plan["links"].items()}
                )
        return scenario


def _is_ref(value):
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and 0 < len(value) <= 100
    )


class _References:
    """The records a document names, looked up in one query per model once the whole document is read."""

    def __init__(self, env):
        self.env = env
        self.wanted = defaultdict(dict)  # model -> {key: [labels]}
        self.found = defaultdict(dict)  # model -> {key: id}

    def want(self, model_name, key, label):
        self.wanted[model_name].setdefault(key, []).append(label)
        return _Reference(model_name, key)

    def resolve(self, problems):
        for model_name, keys in self.wanted.items():
            Model = self.env[model_name]
            key_field = REFERENCE_FIELDS.get(model_name, Model._rec_name or "name")
            domain = [(key_field, "in", list(keys))]
            if model_name in DEFINITION_MODELS:
                # sudo: reading the definitions the document names (a field, a
                # server action); whether the importer may use them is the node
                # kinds' rights check, after creation.
                Model = Model.sudo()
                domain += DEFINITION_MODELS[model_name]
            elif "company_id" in Model._fields:
                domain += [("company_id", "in", [self.env.company.id, False])]
            found = {}
            for record in Model.search(domain, order="id"):
                found.setdefault(record[key_field], record.id)
            self.found[model_name] = found
            label = self._labels().get(model_name) or Model._description.lower()
            for key, labels in keys.items():
                if key not in found:
                    problems.append(
                        self.env._("%(where)s: %(what)s '%(key)s' not found.", where=labels[0], what=label, key=key)
                    )

    def _labels(self):
        return {
            "marketing.event.type": self.env._("event type"),
            "res.partner.category": self.env._("tag"),
            "mailing.list": self.env._("mailing list"),
            "marketing.segment": self.env._("segment"),
            "marketing.coupon.list": self.env._("coupon list"),
            "mail.activity.type": self.env._("activity type"),
            "res.users": self.env._("user"),
            "ir.model.fields": self.env._("contact field"),
            "ir.actions.server": self.env._("server action"),
        }

    def ids_in(self, values, model):
        """``values`` with the references replaced by the ids found."""
        result = {}
        for name, value in values.items():
            if isinstance(value, _Reference):
                result[name] = self.found[value.model].get(value.key, False)
            elif isinstance(value, list) and model._fields[name].type == "many2many":
                result[name] = [(6, 0, [self.found[item.model][item.key] for item in value])]
            else:
                result[name] = value
        return result


class _Reference:
    __slots__ = ("key", "model")

    def __init__(self, model, key):
        self.model = model
        self.key = key
