import contextlib
import json
import re
from collections import defaultdict
from datetime import timedelta
from functools import lru_cache

import jsonschema
import psycopg2

from odoo import api
from odoo import fields
from odoo import models
from odoo import tools
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.tools import SQL
from odoo.tools import create_unique_index

from ..utils.constants import COMPARISONS
from ..utils.money import number_or_none
from ..utils.money import param_at
from ..utils.payload import EVENT_KEY_MAX_LENGTH
from ..utils.payload import EVENT_KEY_PATTERN

# A parameter, or parameters joined by dots for a nested one (order.total).
VALUE_PATH_PATTERN = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")
# The shape of a long array is known from its first items.
STRUCTURE_SAMPLE_ITEMS = 50
# JSON types of the learned parameter structure, as JSON Schema names them.
_PYTHON_JSON_TYPES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (type(None), "null"),
)


def json_type_name(value):
    """The JSON Schema type name of a decoded JSON value."""
    for python_type, name in _PYTHON_JSON_TYPES:
        if isinstance(value, python_type):
            return name
    if isinstance(value, list):
        return "array"
    return "object"


def flatten_structure(params, prefix="", structure=None):
    """Flatten params into ``{path: json type}``.

    Nested objects give dotted paths (``customer.city``) and the items of
    arrays give ``[]`` paths (``items[].sku``), so that merging the structure
    of new events is a plain key union, in Python and in SQL (``jsonb ||``).
    """
    structure = {} if structure is None else structure
    for name, value in params.items():
        path = f"{prefix}{name}"
        structure.setdefault(path, json_type_name(value))
        if isinstance(value, dict):
            flatten_structure(value, f"{path}.", structure)
        elif isinstance(value, list):
            for item in value[:STRUCTURE_SAMPLE_ITEMS]:
                if isinstance(item, dict):
                    flatten_structure(item, f"{path}[].", structure)
                else:
                    structure.setdefault(f"{path}[]", json_type_name(item))
    return structure


_SAMPLE_VALUES = {
    "string": "",
    "integer": 0,
    "number": 0.0,
    "boolean": False,
    "null": None,
    "array": [],
    "object": {},
}


def sample_value(json_type):
    value = _SAMPLE_VALUES.get(json_type)
    return type(value)() if isinstance(value, (dict, list)) else value


def structure_example(structure):
    """Rebuild a sample JSON document from a flat structure (for 'Structure preview')."""
    document = {}
    for path in sorted(structure):
        node = document
        parts = path.split(".")
        for position, part in enumerate(parts):
            is_leaf = position == len(parts) - 1
            is_array = part.endswith("[]")
            name = part[:-2] if is_array else part
            if is_array:
                items = node.setdefault(name, [])
                if not isinstance(items, list):
                    break
                if is_leaf:
                    if not items:
                        items.append(sample_value(structure[path]))
                    break
                if not items or not isinstance(items[0], dict):
                    items[:] = [{}]
                node = items[0]
            elif is_leaf:
                node.setdefault(name, sample_value(structure[path]))
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = node[name] = {}
                node = child
    return document


@lru_cache(maxsize=256)
def _compiled_validator(schema_text):
    schema = json.loads(schema_text)
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def schema_error_path(error):
    """``params.items[0].sku`` style path of a jsonschema error."""
    path = "params"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


class MarketingEventType(models.Model):
    _name = "marketing.event.type"
    _description = "Marketing Event Type"
    _order = "category_sequence, name, id"

    name = fields.Char(required=True, translate=True)
    key = fields.Char(
        required=True,
        index=True,
        help="Unique identifier sent by shops in the 'event' field: Latin letters, digits, '_', '.' and '-'.",
    )
    description = fields.Text(translate=True)
    category_id = fields.Many2one(
        "marketing.event.category",
        required=True,
        ondelete="restrict",
        default=lambda self: self.env.ref("marketing_event_automation.event_category_other", raise_if_not_found=False),
    )
    category_sequence = fields.Integer(related="category_id.sequence", store=True)
    scope = fields.Selection(
        [("contact", "Contact (C)"), ("system", "System (S)")],
        required=True,
        default="contact",
        help="Contact events happen to one contact and can move it through scenarios; "
        "system events (an import, a finished mailing) concern the whole system.",
    )
    company_id = fields.Many2one(
        "res.company",
        index=True,
        help="Leave empty to share the event type between all companies.",
    )
    active = fields.Boolean(default=True)
    is_internal = fields.Boolean(
        readonly=True,
        help="Emitted by Odoo itself (emails, SMS, mailing lists, scores...): its key is stable and cannot change.",
    )
    use_for_segmentation = fields.Boolean(
        string="Use for Contact Segmentation",
        help="Offer this event type in contact filters and scenario conditions.",
    )
    validate_params = fields.Boolean(
        string="Validate Parameters",
        help="Reject events whose parameters do not match the JSON Schema.",
    )
    params_schema = fields.Text(
        string="Parameters JSON Schema",
        help="A JSON Schema (draft 2020-12 unless '$schema' says otherwise) the parameters must match.",
    )
    params_structure = fields.Json(
        string="Learned Structure",
        readonly=True,
        copy=False,
        help="Every parameter seen in accepted events, by path, with its JSON type.",
    )
    params_structure_full = fields.Boolean(
        string="Structure Full",
        readonly=True,
        copy=False,
        help="The learned structure reached the number of parameter paths its sources allow: events with "
        "new paths are still accepted, their new paths are not learned.",
    )
    registered_source_id = fields.Many2one(
        "marketing.event.source",
        string="Registered by",
        readonly=True,
        copy=False,
        ondelete="set null",
        help="The API source whose event registered this type.",
    )
    params_structure_preview = fields.Text(
        string="Structure Preview",
        compute="_compute_params_structure_preview",
    )
    params_structure_paths = fields.Text(
        string="Parameter Paths",
        compute="_compute_params_structure_preview",
    )
    event_count_24h = fields.Integer(string="24h Volume", compute="_compute_counters_24h")
    error_count_24h = fields.Integer(string="24h Errors", compute="_compute_counters_24h")
    event_count = fields.Integer(string="Events", compute="_compute_event_count")
    launched_count_24h = fields.Integer(
        string="24h Launches", compute="_compute_launched_count_24h", help="Scenario entries it caused in the last 24h."
    )
    launch_scenario_count = fields.Integer(
        string="Launches", compute="_compute_scenario_dependencies", search="_search_launch_scenario_count"
    )
    stop_scenario_count = fields.Integer(
        string="Stops", compute="_compute_scenario_dependencies", search="_search_stop_scenario_count"
    )
    condition_scenario_count = fields.Integer(
        string="Conditions", compute="_compute_scenario_dependencies", search="_search_condition_scenario_count"
    )
    dependency_count = fields.Integer(
        string="Dependent Scenarios", compute="_compute_scenario_dependencies", search="_search_dependency_count"
    )
    record_trigger_ids = fields.One2many(
        "marketing.record.trigger", "event_type_id", string="Record Events", context={"active_test": False}
    )
    segment_count = fields.Integer(
        string="Segments",
        compute="_compute_segment_count",
        search="_search_segment_count",
        help="Segments whose event rules count this type.",
    )
    # Money: what an event of this type is worth (a purchase's total), for the
    # scenarios' revenue and the contacts' lifetime value.
    value_param = fields.Char(
        string="Value Parameter",
        help="The parameter holding what the event is worth, e.g. total (order.total for a nested one). "
        "Its events then add up to their contact's lifetime value, and bring revenue to the scenarios "
        "whose objective they are.",
    )
    value_currency_id = fields.Many2one(
        "res.currency",
        help="The currency of the values. Empty: the currency of the event's company.",
    )
    value_currency_param = fields.Char(
        string="Currency Parameter",
        help="The parameter holding the ISO code of each event's currency, e.g. currency. "
        "When an event has none, or an unknown one, the Value Currency applies.",
    )

    _sql_constraints = [
        (
            "key_length",
            f"CHECK(char_length(key) <= {EVENT_KEY_MAX_LENGTH})",
            "An event type key is at most 128 characters long.",
        ),
    ]

    def init(self):
        # A key is unique per company, and shared types (no company) are unique
        # among themselves: a plain unique(key, company_id) lets NULLs repeat.
        create_unique_index(
            self.env.cr, "marketing_event_type_key_company_uniq", self._table, ["key", "COALESCE(company_id, 0)"]
        )

    @api.constrains("key")
    def _check_key(self):
        for event_type in self:
            if not EVENT_KEY_PATTERN.match(event_type.key or ""):
                raise ValidationError(
                    self.env._(
                        "Invalid key %(key)r for event type %(name)s: use only Latin letters, digits, "
                        "'_', '.' and '-', without spaces.",
                        key=event_type.key,
                        name=event_type.name,
                    )
                )

    @api.constrains("params_schema", "validate_params")
    def _check_params_schema(self):
        for event_type in self:
            if event_type.validate_params and not event_type.params_schema:
                raise ValidationError(
                    self.env._(
                        "Event type %(name)s validates its parameters: give it a JSON Schema.", name=event_type.name
                    )
                )
            if not event_type.params_schema:
                continue
            try:
                schema = json.loads(event_type.params_schema)
            except ValueError as error:
                raise ValidationError(
                    self.env._(
                        "The JSON Schema of %(name)s is not valid JSON: %(error)s", name=event_type.name, error=error
                    )
                ) from error
            validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            try:
                validator_class.check_schema(schema)
            except jsonschema.SchemaError as error:
                raise ValidationError(
                    self.env._(
                        "The JSON Schema of %(name)s is not a valid schema: %(reason)s (at %(path)s)",
                        name=event_type.name,
                        reason=error.message,
                        path="/".join(str(part) for part in error.absolute_path) or "/",
                    )
                ) from error

    @api.depends("params_structure")
    def _compute_params_structure_preview(self):
        for event_type in self:
            structure = event_type.params_structure or {}
            event_type.params_structure_preview = json.dumps(structure_example(structure), indent=2, sort_keys=True)
            event_type.params_structure_paths = "\n".join(f"{path}: {structure[path]}" for path in sorted(structure))

    def _compute_counters_24h(self):
        since = fields.Datetime.now() - timedelta(hours=24)
        counts = {
            (event_type.id, state): count
            for event_type, state, count in self.env["marketing.event"]._read_group(
                [("type_id", "in", self.ids), ("received_at", ">=", since)], ["type_id", "state"], ["__count"]
            )
        }
        for event_type in self:
            event_type.event_count_24h = sum(
                counts.get((event_type.id, state), 0) for state in ("pending", "processed", "error")
            )
            event_type.error_count_24h = sum(counts.get((event_type.id, state), 0) for state in ("error", "rejected"))

    def _compute_event_count(self):
        counts = dict(self.env["marketing.event"]._read_group([("type_id", "in", self.ids)], ["type_id"], ["__count"]))
        purged = self._purged_event_counts()
        for event_type in self:
            event_type.event_count = counts.get(event_type, 0) + purged.get(event_type.id, (0, 0))[0]

    def _purged_event_counts(self):
        """{type id: (events, errors)} the retention purge deleted, counted per day (marketing.event.daily).

        The 24h counters need none: no retention period is shorter than a day.
        """
        return self.env["marketing.event.daily"]._purged_counts([type_id for type_id in self.ids if type_id])

    def _compute_launched_count_24h(self):
        since = fields.Datetime.now() - timedelta(hours=24)
        counts = dict(
            self.env["marketing.scenario.participant"]._read_group(
                [("event_type_id", "in", self.ids), ("entered_at", ">=", since), ("is_test", "=", False)],
                ["event_type_id"],
                ["__count"],
            )
        )
        for event_type in self:
            event_type.launched_count_24h = counts.get(event_type, 0)

    def _dependent_scenarios(self):
        """{type id: {"launch": scenario ids, "stop": ..., "condition": ...}} for these types (or all when empty)."""
        Scenario = self.env["marketing.scenario"].with_context(active_test=False)
        type_ids = self.ids
        dependencies = defaultdict(lambda: {"launch": set(), "stop": set(), "condition": set()})
        launch_domain = [("trigger_type", "=", "event")]
        if type_ids:
            launch_domain.append(("trigger_event_type_id", "in", type_ids))
        else:
            launch_domain.append(("trigger_event_type_id", "!=", False))
        for scenario in Scenario.search(launch_domain):
            dependencies[scenario.trigger_event_type_id.id]["launch"].add(scenario.id)
        stop_domain = [("exit_event_type_ids", "in", type_ids)] if type_ids else [("exit_event_type_ids", "!=", False)]
        for scenario in Scenario.search(stop_domain):
            for event_type in scenario.exit_event_type_ids:
                dependencies[event_type.id]["stop"].add(scenario.id)
        Node = self.env["marketing.scenario.node"].with_context(active_test=False)
        node_domain = ["|", ("wait_event_type_id", "!=", False), ("condition_event_type_id", "!=", False)]
        if type_ids:
            node_domain = ["|", ("wait_event_type_id", "in", type_ids), ("condition_event_type_id", "in", type_ids)]
        for node in Node.search(node_domain):
            for event_type in node.wait_event_type_id | node.condition_event_type_id:
                dependencies[event_type.id]["condition"].add(node.scenario_id.id)
        for scenario in Scenario.search(
            [("objective_event_type_id", "in", type_ids)] if type_ids else [("objective_event_type_id", "!=", False)]
        ):
            dependencies[scenario.objective_event_type_id.id]["condition"].add(scenario.id)
        return dependencies

    def _compute_scenario_dependencies(self):
        dependencies = self._dependent_scenarios()
        for event_type in self:
            found = dependencies.get(event_type.id, {"launch": (), "stop": (), "condition": ()})
            event_type.launch_scenario_count = len(found["launch"])
            event_type.stop_scenario_count = len(found["stop"])
            event_type.condition_scenario_count = len(found["condition"])
            event_type.dependency_count = len(set().union(*found.values()))

    def _search_by_dependency(self, kind, operator, value):
        dependencies = self.browse()._dependent_scenarios()
        counts = {
            type_id: len(set().union(*found.values())) if kind == "any" else len(found[kind])
            for type_id, found in dependencies.items()
        }
        return self._count_domain(counts, operator, value, self.env._("Dependency counts"))

    @api.model
    def _count_domain(self, counts, operator, value, label):
        """The types whose count in ``counts`` ({type id: count}, 0 when absent) compares with ``value``."""
        if operator not in ("=", "!=", ">", ">=", "<", "<=") or not isinstance(value, (int, float)):
            raise UserError(self.env._("%(counts)s can only be compared with numbers.", counts=label))

        def compare(count):
            return COMPARISONS[operator](count, value)

        if compare(0):
            # Types without any dependency match too: exclude those that do not.
            return [("id", "not in", [type_id for type_id, count in counts.items() if not compare(count)])]
        return [("id", "in", [type_id for type_id, count in counts.items() if compare(count)])]

    def _search_launch_scenario_count(self, operator, value):
        return self._search_by_dependency("launch", operator, value)

    def _search_stop_scenario_count(self, operator, value):
        return self._search_by_dependency("stop", operator, value)

    def _search_condition_scenario_count(self, operator, value):
        return self._search_by_dependency("condition", operator, value)

    def _search_dependency_count(self, operator, value):
        return self._search_by_dependency("any", operator, value)

    def _segment_counts(self):
        """{type id: number of segments with a rule on it}, for these types (or all when empty)."""
        domain = [("event_type_id", "in", self.ids)] if self.ids else []
        # sudo: the counts on an event type, whose segments the list then shows with the user's rights.
        groups = (
            self.env["marketing.segment.rule"]
            .sudo()
            ._read_group(domain, ["event_type_id"], ["segment_id:count_distinct"])
        )
        return {event_type.id: count for event_type, count in groups}

    def _compute_segment_count(self):
        counts = self._segment_counts()
        for event_type in self:
            event_type.segment_count = counts.get(event_type.id, 0)

    def _search_segment_count(self, operator, value):
        return self._count_domain(self.browse()._segment_counts(), operator, value, self.env._("Segment counts"))

    def action_view_segments(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("marketing_event_automation.action_marketing_segment")
        action["domain"] = [("rule_ids.event_type_id", "=", self.id)]
        action["display_name"] = self.env._("Segments using %(name)s", name=self.name)
        action["context"] = {"create": False}
        return action

    def action_view_dependencies(self):
        self.ensure_one()
        found = self._dependent_scenarios().get(self.id, {})
        scenario_ids = sorted(set().union(*found.values())) if found else []
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Scenarios depending on %(name)s", name=self.name),
            "res_model": "marketing.scenario",
            "view_mode": "list,form",
            "views": [
                (self.env.ref("marketing_event_automation.marketing_scenario_view_list_dependencies").id, "list"),
                (False, "form"),
            ],
            "domain": [("id", "in", scenario_ids)],
            "context": {"active_test": False, "create": False},
            "target": "new",
        }

    def unlink(self):
        result = super().unlink()
        self.env.registry.clear_cache()  # _ids_by_key
        return result

    @api.ondelete(at_uninstall=False)
    def _unlink_except_used_by_running_scenarios(self):
        dependencies = self._dependent_scenarios()
        scenario_ids = set()
        for found in dependencies.values():
            scenario_ids |= set().union(*found.values())
        running = (
            self.env["marketing.scenario"]
            .browse(scenario_ids)
            .filtered(lambda scenario: scenario.state in ("running", "paused"))
        )
        if running:
            raise UserError(
                self.env._(
                    "%(types)s cannot be deleted: the running scenarios %(scenarios)s depend on it. "
                    "Stop them or change them first.",
                    types=", ".join(self.mapped("name")),
                    scenarios=", ".join(running.mapped("name")),
                )
            )

    @api.ondelete(at_uninstall=False)
    def _unlink_except_internal(self):
        internal = self.filtered("is_internal")
        if internal:
            raise ValidationError(
                self.env._(
                    "%(names)s are emitted by Odoo itself and cannot be deleted; archive them instead.",
                    names=", ".join(internal.mapped("name")),
                )
            )

    @api.model_create_multi
    def create(self, vals_list):
        self._check_keys_free([(vals.get("key"), vals.get("company_id")) for vals in vals_list])
        types = super().create(vals_list)
        self.env.registry.clear_cache()  # _ids_by_key
        return types

    def _check_keys_free(self, keys_and_companies, exclude_ids=()):
        """Refuse a key already used in the same company, with a message (the unique index is the backstop)."""
        keys = {key for key, _company_id in keys_and_companies if key}
        if not keys:
            return
        taken = (
            self.with_context(active_test=False)
            .sudo()
            .search_read([("key", "in", list(keys)), ("id", "not in", list(exclude_ids))], ["key", "company_id"])
        )
        taken = {(record["key"], record["company_id"] and record["company_id"][0]) for record in taken}
        seen = set()
        for key, company_id in keys_and_companies:
            identity = (key, company_id or False)
            if identity in taken or identity in seen:
                raise ValidationError(self.env._("An event type with the key %(key)r already exists.", key=key))
            seen.add(identity)

    @api.constrains("value_param", "value_currency_param")
    def _check_value_params(self):
        for event_type in self:
            for field_name in ("value_param", "value_currency_param"):
                path = event_type[field_name]
                if path and not VALUE_PATH_PATTERN.fullmatch(path):
                    raise ValidationError(
                        self.env._(
                            "%(field)s of %(type)s: a parameter name, or names joined by dots for a nested one "
                            "(e.g. order.total), not %(path)r.",
                            field=event_type._fields[field_name].string,
                            type=event_type.name,
                            path=path,
                        )
                    )

    def write(self, vals):
        if "key" in vals or "company_id" in vals:
            self._check_keys_free(
                [(vals.get("key", record.key), vals.get("company_id", record.company_id.id)) for record in self],
                exclude_ids=self.ids,
            )
        if "key" in vals and any(event_type.is_internal and event_type.key != vals["key"] for event_type in self):
            raise ValidationError(
                self.env._("The key of an internal event type cannot change: Odoo emits it by that key.")
            )
        result = super().write(vals)
        if "key" in vals or "company_id" in vals:
            self.env.registry.clear_cache()  # _ids_by_key
        return result

    # ------------------------------------------------------------------
    # Money
    # ------------------------------------------------------------------

    def _event_amounts(self, events):
        """{event: (amount, currency, company)} of these events of this type whose value parameter holds a number.

        The currency is the one the event's currency parameter names, else
        the type's, else its company's; the currency codes of the whole batch
        are looked up at once.
        """
        self.ensure_one()
        if not self.value_param or not events:
            return {}
        value_path = self.value_param.split(".")
        currency_path = self.value_currency_param.split(".") if self.value_currency_param else None
        found = {}
        for event in events:
            amount = number_or_none(param_at(event.params, value_path))
            if amount is None:
                continue
            code = param_at(event.params, currency_path) if currency_path else None
            found[event] = (amount, code.strip().upper() if isinstance(code, str) else None)
        codes = sorted({code for _amount, code in found.values() if code})
        Currency = self.env["res.currency"].with_context(active_test=False)
        by_code = {currency.name: currency for currency in Currency.search([("name", "in", codes)])} if codes else {}
        amounts = {}
        for event, (amount, code) in found.items():
            company = event.company_id or event.partner_id.company_id or self.env.company
            amounts[event] = (amount, by_code.get(code) or self.value_currency_id or company.currency_id, company)
        return amounts

    @api.model
    def _convert_amounts(self, requests):
        """{key: amount converted and rounded} for ``requests`` of (key, amount, from, to, company, moment).

        One rate per (from, to, company, day): a batch of events of the same day
        and currency costs one rate lookup, a batch in the company's currency none.
        """
        rates = {}
        converted = {}
        for key, amount, from_currency, to_currency, company, moment in requests:
            day = fields.Date.to_date(moment) if moment else fields.Date.context_today(self)
            rate_key = (from_currency.id, to_currency.id, company.id, day)
            if rate_key not in rates:
                rates[rate_key] = from_currency._get_conversion_rate(from_currency, to_currency, company, day)
            converted[key] = to_currency.round(amount * rates[rate_key])
        return converted

    # ------------------------------------------------------------------
    # Validation and learning, used by ingestion
    # ------------------------------------------------------------------

    def _params_errors(self, params):
        """Every reason ``params`` break this type's schema, as ``path: reason``."""
        self.ensure_one()
        if not (self.validate_params and self.params_schema):
            return []
        validator = _compiled_validator(self.params_schema)
        errors = sorted(validator.iter_errors(params), key=lambda error: list(map(str, error.absolute_path)))
        return [f"{schema_error_path(error)}: {error.message[:300]}" for error in errors[:10]]

    @api.model
    def _learn_structures(self, structures_by_type_id, max_paths_by_type_id=None):
        """Merge newly seen parameter paths into the learned structures.

        Known paths keep their type, new ones are added, up to the number of
        paths the events' source allows (``max_paths_by_type_id``, 0 for no
        limit): beyond it the structure stops growing and the type is marked
        full. The update is one statement per type whose structure really
        grew, so concurrent ingestion requests neither lose paths nor rewrite
        the row each time, and the cap is counted on the row as it is.
        """
        self.flush_model(["params_structure", "params_structure_full"])
        updated = False
        max_paths_by_type_id = max_paths_by_type_id or {}
        event_types = self.browse(list(structures_by_type_id))  # read together
        for event_type, structure in zip(event_types, structures_by_type_id.values()):
            # Structures only grow: paths this transaction already sees need
            # no statement (nearly every batch, once a type is known).
            if not structure or structure.keys() <= (event_type.params_structure or {}).keys():
                continue
            max_paths = max_paths_by_type_id.get(event_type.id) or 0
            if max_paths and event_type.params_structure_full:
                continue
            updated = True
            self.env.cr.execute(
                SQL(
                    """
                    WITH room AS (
                        SELECT CASE WHEN %(max)s > 0
                                    THEN GREATEST(%(max)s - (SELECT count(*) FROM jsonb_object_keys(
                                        COALESCE(t.params_structure, '{}'::jsonb))), 0)
                               END AS paths
                          FROM marketing_event_type t WHERE t.id = %(id)s
                    ), added AS (
                        SELECT COALESCE(jsonb_object_agg(new.key, new.value), '{}'::jsonb) AS paths, count(*) AS count
                          FROM (
                            SELECT new.key, new.value
                              FROM jsonb_each(%(new)s::jsonb) new, marketing_event_type t
                             WHERE t.id = %(id)s AND NOT COALESCE(t.params_structure, '{}'::jsonb) ? new.key
                          ORDER BY new.key
                             LIMIT (SELECT paths FROM room)
                          ) new
                    )
                    UPDATE marketing_event_type
                       SET params_structure = COALESCE(params_structure, '{}'::jsonb) || (SELECT paths FROM added),
                           params_structure_full = %(max)s > 0 AND (SELECT count(*) FROM added) < %(wanted)s
                     WHERE id = %(id)s
                       AND NOT COALESCE(params_structure, '{}'::jsonb) ?& %(paths)s
                    """,
                    new=json.dumps(structure),
                    id=event_type.id,
                    paths=list(structure),
                    max=max_paths,
                    wanted=len(structure.keys() - (event_type.params_structure or {}).keys()),
                )
            )
        if updated:
            self.invalidate_model(["params_structure", "params_structure_full"])

    @api.model
    def _get_by_keys(self, keys, company):
        """Map each key to its active or archived type, the company's own before a shared one."""
        ids_by_key = self._ids_by_key(company.id)
        missing = [key for key in keys if key not in ids_by_key]
        if missing:
            # The cache may predate a type another transaction committed
            # since (a request replayed after a concurrent registration):
            # a key it lacks is looked for in the database.
            ids_by_key = {**ids_by_key, **self._read_ids_by_key(company.id, missing)}
        wanted = [ids_by_key[key] for key in keys if key in ids_by_key]
        if not wanted:
            return {}
        # One query by primary key that reads what a first field access
        # would prefetch, and keeps only the types that still exist and the
        # caller may read (a type deleted since the cache was filled, or
        # another company's).
        prefetched = [
            name for name, field in self._fields.items() if field.prefetch is True and field.is_accessible(self.env)
        ]
        types = self.with_context(active_test=False).search_fetch([("id", "in", wanted)], prefetched)
        by_id = {event_type.id: event_type for event_type in types}
        return {key: by_id[ids_by_key[key]] for key in keys if ids_by_key.get(key) in by_id}

    @api.model
    @tools.ormcache("company_id")
    def _ids_by_key(self, company_id):
        """``{key: type id}`` of the types a company's events may have, its own winning over a shared one.

        Kept by each worker: every ingested batch and internal event looks its
        types up by key, and types change seldom. Cleared when a type is
        created or deleted or its key or company changes; only the ids are
        kept, the records are read in the caller's transaction.
        """
        return tools.frozendict(self._read_ids_by_key(company_id))

    @api.model
    def _read_ids_by_key(self, company_id, keys=None):
        """``{key: type id}`` of a company's types (of ``keys`` only if given), its own winning over a shared one."""
        domain = [("company_id", "in", [company_id, False])]
        if keys is not None:
            domain.append(("key", "in", keys))
        # sudo: ids only, for a company the caller names; _get_by_keys checks
        # the caller's access to the records it returns.
        types = self.sudo().with_context(active_test=False).search_fetch(domain, ["key", "company_id"])
        ids_by_key = {}
        for event_type in types.sorted(lambda event_type: bool(event_type.company_id)):
            ids_by_key[event_type.key] = event_type.id  # the company's own type comes last and wins
        return ids_by_key

    @api.model
    def _register_unknown_keys(self, names_by_key, company, source=None):
        """Create types for keys posted through the API that nobody declared yet."""
        if not names_by_key:
            return self.browse()
        category = self.env.ref("marketing_event_automation.event_category_other")
        self._check_not_registered_concurrently(list(names_by_key), company, category)
        try:
            with self.env.cr.savepoint():
                return self.create(
                    [
                        {
                            "name": name,
                            "key": key,
                            "category_id": category.id,
                            "company_id": company.id,
                            "registered_source_id": source.id if source else False,
                        }
                        for key, name in names_by_key.items()
                    ]
                )
        except psycopg2.errors.UniqueViolation as error:
            # Registered by another request between the check and the create.
            self._check_not_registered_concurrently(list(names_by_key), company, category)
            raise error

    @api.model
    def _check_not_registered_concurrently(self, keys, company, category):
        """Fail with a real serialization failure when another transaction registered one of ``keys``.

        Its row is invisible to this transaction's snapshot (REPEATABLE
        READ), so the type cannot be used here. An insert with ON CONFLICT DO
        NOTHING makes PostgreSQL raise SQLSTATE 40001 for a row committed
        since the snapshot, which Odoo's retry loop handles: it replays the
        request, and the replay finds the type. (A unique violation, or an
        exception made in Python without a SQLSTATE, would reach the client
        as a 500.) The insert is always rolled back; the advisory locks, held
        until this transaction ends, make a concurrent registration of the
        same key wait for this one and then meet its committed row here.
        """
        self.env.cr.execute(
            SQL(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s || key, 0))"
                " FROM unnest(%s::varchar[]) AS key ORDER BY key",
                f"marketing.event.type:{company.id}:",
                sorted(keys),
            )
        )
        with contextlib.closing(self.env.cr.savepoint(flush=False)):
            self.env.cr.execute(
                SQL(
                    """
                    INSERT INTO marketing_event_type (key, company_id, name, category_id, scope)
                    SELECT key, %(company)s, jsonb_build_object('en_US', key), %(category)s, 'contact'
                      FROM unnest(%(keys)s::varchar[]) AS key
                    ON CONFLICT DO NOTHING
                    """,
                    company=company.id,
                    category=category.id,
                    keys=keys,
                ),
                log_exceptions=False,
            )

    # ------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------

    def action_view_events(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("marketing_event_automation.action_marketing_event")
        action["domain"] = [("type_id", "=", self.id)]
        action["context"] = {"default_type_id": self.id, "search_default_group_by_state": 0}
        action["display_name"] = self.env._("Event History: %(name)s", name=self.name)
        return action

    def action_open_validation(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Validate Parameters: %(name)s", name=self.name),
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "views": [
                (self.env.ref("marketing_event_automation.marketing_event_type_view_form_validation").id, "form")
            ],
            "target": "new",
        }

    def action_structure_preview(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Structure Preview: %(name)s", name=self.name),
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "views": [(self.env.ref("marketing_event_automation.marketing_event_type_view_form_structure").id, "form")],
            "target": "new",
        }
