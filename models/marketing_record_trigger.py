import re

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import ValidationError
from odoo.osv.expression import normalize_domain
from odoo.tools.safe_eval import safe_eval
from odoo.tools.translate import LazyTranslate

_lt = LazyTranslate(__name__)

RECORD_TRIGGERS = [
    ("created", "A record is created"),
    ("field_changed", "A field changes"),
    ("domain", "A record comes to match a filter"),
    ("date", "A date of the record is reached"),
]
# How each trigger is run by Odoo's automation rules (base_automation).
AUTOMATION_TRIGGERS = {
    "created": "on_create",
    "field_changed": "on_write",
    "domain": "on_create_or_write",
    "date": "on_time",
}
DELAY_UNITS = [("minutes", "Minutes"), ("hour", "Hours"), ("day", "Days")]
PARAM_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([A-Za-z_][A-Za-z0-9_.]*)\s*$")

# Shipped record events. Each is offered when its model is installed; "app"
# names the module that brings it, for the marketer.
PRESETS = {
    "sale_order_confirmed": {
        "label": _lt("Sales: order confirmed (purchase)"),
        "model": "sale.order",
        "event_key": "purchase",
        "event_name": "Purchase",
        "category": "event_category_ecommerce",
        "trigger": "domain",
        "filter_domain": "[('state', '=', 'sale')]",
        "partner_path": "partner_id",
        "params_mapping": "order: name\namount: amount_total\ncurrency: currency_id.name\nlines: order_line",
    },
    "cart_abandoned": {
        "label": _lt("eCommerce: cart abandoned (cart_abandoned)"),
        "model": "sale.order",
        "requires_field": "is_abandoned_cart",
        "event_key": "cart_abandoned",
        "event_name": "Cart abandoned",
        "category": "event_category_ecommerce",
        "trigger": "date",
        "date_field": "date_order",
        # website_sale's own notion: a website quotation older than the
        # website's abandoned-cart delay (one hour unless set otherwise).
        "date_delay": 1,
        "date_delay_unit": "hour",
        "filter_domain": "[('is_abandoned_cart', '=', True)]",
        "partner_path": "partner_id",
        "params_mapping": "order: name\ntotal: amount_total\ncurrency: currency_id.name\nitems: order_line",
    },
    "invoice_paid": {
        "label": _lt("Invoicing: customer invoice paid (invoice_paid)"),
        "model": "account.move",
        "event_key": "invoice_paid",
        "event_name": "Invoice paid",
        "category": "event_category_ecommerce",
        "trigger": "domain",
        "filter_domain": "[('move_type', '=', 'out_invoice'), ('payment_state', 'in', ('paid', 'in_payment'))]",
        "partner_path": "partner_id",
        "params_mapping": "invoice: name\namount: amount_total\ncurrency: currency_id.name",
    },
    "lead_won": {
        "label": _lt("CRM: opportunity won (lead_won)"),
        "model": "crm.lead",
        "event_key": "lead_won",
        "event_name": "Opportunity won",
        "category": "event_category_other",
        "trigger": "domain",
        "filter_domain": "[('stage_id.is_won', '=', True)]",
        "partner_path": "partner_id",
        "params_mapping": "lead: name\nrevenue: expected_revenue\nstage: stage_id.name",
    },
    "lead_stage_changed": {
        "label": _lt("CRM: stage changed (lead_stage_changed)"),
        "model": "crm.lead",
        "event_key": "lead_stage_changed",
        "event_name": "Opportunity stage changed",
        "category": "event_category_other",
        "trigger": "field_changed",
        "trigger_fields": ["stage_id"],
        "partner_path": "partner_id",
        "params_mapping": "lead: name\nstage: stage_id.name",
    },
    "event_registration_confirmed": {
        "label": _lt("Events: registration confirmed (event_registered)"),
        "model": "event.registration",
        "event_key": "event_registered",
        "event_name": "Event registration confirmed",
        "category": "event_category_other",
        "trigger": "domain",
        "filter_domain": "[('state', '=', 'open')]",
        "partner_path": "partner_id",
        "params_mapping": "event: event_id.name\nevent_id: event_id.id",
    },
    "website_page_visited": {
        "label": _lt("Website: page visited by an identified visitor (page_visited)"),
        "model": "website.track",
        "event_key": "page_visited",
        "event_name": "Page visited",
        "category": "event_category_other",
        "trigger": "created",
        "filter_domain": "[('visitor_id.partner_id', '!=', False)]",
        "partner_path": "visitor_id.partner_id",
        "params_mapping": "url: url\npage: page_id.name",
    },
}


def _preset_selection(records):
    env = records.env
    return [
        (code, env._(preset["label"]))
        for code, preset in PRESETS.items()
        if preset["model"] in env and preset.get("requires_field", "id") in env[preset["model"]]._fields
    ]


class MarketingRecordTrigger(models.Model):
    _name = "marketing.record.trigger"
    _description = "Marketing Record Event"
    _order = "event_type_id, id"

    event_type_id = fields.Many2one(
        "marketing.event.type",
        required=True,
        ondelete="cascade",
        index=True,
        domain=[("scope", "=", "contact")],
    )
    company_id = fields.Many2one(related="event_type_id.company_id", store=True, index=True)
    active = fields.Boolean(default=True)
    preset = fields.Selection(
        _preset_selection, help="A shipped record event; only those of installed apps are offered."
    )
    model_id = fields.Many2one(
        "ir.model",
        string="Odoo Model",
        required=True,
        ondelete="cascade",
        domain=[("transient", "=", False)],
        help="The records whose life logs this event: sale orders, invoices, leads...",
    )
    model_name = fields.Char(related="model_id.model", string="Model Name")
    trigger = fields.Selection(RECORD_TRIGGERS, required=True, default="created")
    trigger_field_ids = fields.Many2many(
        "ir.model.fields",
        "marketing_record_trigger_field_rel",
        "trigger_id",
        "field_id",
        string="Changed Fields",
        domain="[('model_id', '=', model_id), ('store', '=', True)]",
    )
    filter_domain = fields.Char(
        string="Filter", default="[]", help="Only records matching it; with 'comes to match', the moment it starts to."
    )
    date_field_id = fields.Many2one(
        "ir.model.fields",
        ondelete="cascade",
        domain="[('model_id', '=', model_id), ('ttype', 'in', ('date', 'datetime'))]",
    )
    date_delay = fields.Integer(string="Delay", help="After the date (negative: before it).")
    date_delay_unit = fields.Selection(DELAY_UNITS, default="hour")
    partner_path = fields.Char(
        string="Contact Field",
        required=True,
        default="partner_id",
        help="The field leading from the record to its contact, e.g. partner_id or visitor_id.partner_id.",
    )
    params_mapping = fields.Text(
        string="Parameters",
        help="One 'name: field' a line, e.g. 'amount: amount_total' or 'currency: currency_id.name'.",
    )
    automation_id = fields.Many2one(
        "base.automation", string="Automation Rule", readonly=True, copy=False, ondelete="set null"
    )

    @api.onchange("preset")
    def _onchange_preset(self):
        if self.preset:
            self.update(self._preset_values(self.preset))

    @api.model
    def _preset_values(self, code):
        preset = PRESETS[code]
        model = self.env["ir.model"]._get(preset["model"])
        values = {
            "preset": code,
            "model_id": model.id,
            "trigger": preset["trigger"],
            "filter_domain": preset.get("filter_domain", "[]"),
            "partner_path": preset["partner_path"],
            "params_mapping": preset["params_mapping"],
            "trigger_field_ids": [
                fields.Command.set(
                    [
                        self.env["ir.model.fields"]._get(preset["model"], name).id
                        for name in preset.get("trigger_fields", ())
                    ]
                )
            ],
        }
        if preset.get("date_field"):
            values.update(
                {
                    "date_field_id": self.env["ir.model.fields"]._get(preset["model"], preset["date_field"]).id,
                    "date_delay": preset["date_delay"],
                    "date_delay_unit": preset["date_delay_unit"],
                }
            )
        return values

    @api.model
    def _install_preset(self, code):
        """The record event of preset ``code``, with its event type, created when missing."""
        if code not in dict(_preset_selection(self)):
            raise ValidationError(self.env._("Preset: %(code)s needs an app that is not installed.", code=code))
        preset = PRESETS[code]
        EventType = self.env["marketing.event.type"]
        event_type = EventType._get_by_keys([preset["event_key"]], self.env.company).get(preset["event_key"])
        if not event_type:
            event_type = EventType.create(
                {
                    "name": preset["event_name"],
                    "key": preset["event_key"],
                    "category_id": self.env.ref(f"marketing_event_automation.{preset['category']}").id,
                }
            )
        existing = self.search([("event_type_id", "=", event_type.id), ("preset", "=", code)], limit=1)
        return existing or self.create({"event_type_id": event_type.id, **self._preset_values(code)})

    @api.model
    def _demo_sale_order_purchase(self):
        """Demo, when sale is installed: confirmed orders log purchase, which enters the post-purchase scenario.

        Runs once: the demo order carries a reference the next run finds.
        """
        if "sale.order" not in self.env or "product.product" not in self.env:
            return False
        Order = self.env["sale.order"]
        if Order.search_count([("client_order_ref", "=", "MEA-DEMO")], limit=1):
            return False
        self._install_preset("sale_order_confirmed")
        template = self.env.ref("marketing_event_automation.scenario_template_post_purchase_review")
        scenario = template._create_scenario()
        scenario.action_start()
        partner = self.env["res.partner"].create({"name": "Dana Demo-Order", "email": "dana.demo@example.com"})
        product = self.env["product.product"].create({"name": "Demo walking shoes", "list_price": 89.0})
        order = Order.create(
            {
                "partner_id": partner.id,
                "client_order_ref": "MEA-DEMO",
                "order_line": [fields.Command.create({"product_id": product.id, "product_uom_qty": 1})],
            }
        )
        order.action_confirm()
        return order

    # ------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------

    def _domain(self):
        return safe_eval(self.filter_domain or "[]", {"context_today": fields.Date.context_today(self)})

    def _params_paths(self):
        """[(param name, field path)] of the parameters mapping; raises ValueError on a bad line."""
        pairs = []
        for number, line in enumerate((self.params_mapping or "").splitlines(), start=1):
            if not line.strip():
                continue
            match = PARAM_LINE.match(line)
            if not match:
                raise ValueError(
                    self.env._("line %(number)s: write 'name: field', e.g. 'amount: amount_total'", number=number)
                )
            pairs.append(match.groups())
        return pairs

    def _check_path(self, path):
        """The last field of ``path`` on this trigger's model; raises ValueError when a name is unknown."""
        model = self.env[self.model_name]
        field = None
        for name in path.split("."):
            if field is not None:
                if not field.relational:
                    raise ValueError(self.env._("%(path)s: %(name)s is not a relation", path=path, name=field.name))
                model = self.env[field.comodel_name]
            field = model._fields.get(name)
            if field is None:
                raise ValueError(
                    self.env._("%(path)s: %(model)s has no field %(name)s", path=path, model=model._name, name=name)
                )
        return field

    @api.constrains(
        "model_id", "trigger", "filter_domain", "date_field_id", "partner_path", "params_mapping", "trigger_field_ids"
    )
    def _check_configuration(self):
        for trigger in self:
            if trigger.model_name not in self.env:
                raise ValidationError(self.env._("Odoo Model: %(model)s is not installed.", model=trigger.model_name))
            try:
                self.env[trigger.model_name].sudo().search_count(trigger._domain(), limit=1)
            except Exception as error:
                raise ValidationError(
                    self.env._("Filter: %(error)s", error=str(error) or error.__class__.__name__)
                ) from error
            try:
                partner_field = trigger._check_path(trigger.partner_path or "")
                if partner_field.comodel_name != "res.partner":
                    raise ValueError(self.env._("%(path)s does not lead to a contact", path=trigger.partner_path))
            except ValueError as error:
                raise ValidationError(self.env._("Contact Field: %(error)s", error=error)) from error
            try:
                for _name, path in trigger._params_paths():
                    trigger._check_path(path)
            except ValueError as error:
                raise ValidationError(self.env._("Parameters: %(error)s", error=error)) from error
            if trigger.trigger == "date" and not trigger.date_field_id:
                raise ValidationError(self.env._("Date Field: choose the date that sends the event."))
            if trigger.trigger == "field_changed" and not trigger.trigger_field_ids:
                raise ValidationError(self.env._("Changed Fields: choose the fields whose change sends the event."))
            if trigger.trigger == "domain" and not trigger._domain():
                raise ValidationError(self.env._("Filter: say what the record must come to match."))

    # ------------------------------------------------------------------
    # The automation rule that runs it
    # ------------------------------------------------------------------

    @api.model_create_multi
    def create(self, vals_list):
        triggers = super().create(vals_list)
        triggers._sync_automations()
        return triggers

    def write(self, vals):
        result = super().write(vals)
        self._sync_automations()
        return result

    def unlink(self):
        # sudo: the automation rule belongs to the record event; see _sync_automations.
        # Through its own unlink, which takes its patches off the model.
        self.sudo().automation_id.unlink()
        return super().unlink()

    def _automation_values(self):
        domain = self._domain()
        values = {
            "name": self.env._("Marketing event %(key)s", key=self.event_type_id.key),
            "model_id": self.model_id.id,
            "trigger": AUTOMATION_TRIGGERS[self.trigger],
            "active": self.active and self.event_type_id.active,
            "marketing_record_trigger_id": self.id,
            "filter_domain": repr(domain) if domain else False,
            "filter_pre_domain": False,
            "trigger_field_ids": [fields.Command.set(self.trigger_field_ids.ids)],
            "trg_date_id": False,
        }
        if self.trigger == "domain":
            # "Comes to match": the record did not match before the change.
            values["filter_pre_domain"] = repr(["!", *normalize_domain(domain)])
        if self.trigger == "date":
            values.update(
                {
                    "trg_date_id": self.date_field_id.id,
                    "trg_date_range": self.date_delay,
                    "trg_date_range_type": self.date_delay_unit or "hour",
                }
            )
        return values

    def _sync_automations(self):
        """Create or update the automation rule of each record event.

        sudo: automation rules are for administrators; this one runs no code
        and no server action, it only logs this event type's events, with the
        fields the marketer chose.
        """
        for trigger in self.sudo():
            values = trigger._automation_values()
            if trigger.automation_id:
                trigger.automation_id.write(values)
            else:
                trigger.automation_id = self.env["base.automation"].sudo().create(values)
            # The trigger's computes reset these when the trigger is written: write them again.
            trigger.automation_id.write(
                {key: values[key] for key in ("filter_domain", "filter_pre_domain", "trigger_field_ids", "trg_date_id")}
            )

    # ------------------------------------------------------------------
    # Logging the events
    # ------------------------------------------------------------------

    def _emit_for_records(self, records):
        """Log this record event for ``records``, all in one insert; records without a contact log nothing."""
        self.ensure_one()
        event_type = self.event_type_id
        if not records or not event_type.active or not self.active:
            return []
        # sudo: the event describes the record that changed, whoever changed it.
        records = records.sudo()
        paths = self._params_paths()
        events = []
        for record in records:
            partner = record.mapped(self.partner_path)[:1]
            if not partner:
                continue
            params = {"model": record._name, "record_id": record.id, "name": record.display_name}
            params.update({name: _param_value(record, path) for name, path in paths})
            company = record.company_id if "company_id" in record._fields else self.env["res.company"]
            events.append(
                {
                    "type": event_type,
                    "key": event_type.key,
                    "partner_id": partner.id,
                    "company_id": company.id or None,
                    "params": params,
                }
            )
        if not events:
            return []
        # sudo: see marketing.event._emit; the type is this record event's own, shared or of one company.
        return self.env["marketing.event"].sudo()._insert_events(events)


def _param_value(record, path):
    """A field value as JSON: numbers and text as they are, relations by name, lists for x2many."""
    names = path.split(".")
    value = record
    for name in names[:-1]:
        value = value[name]
    last = names[-1]
    if not value:
        return None
    field = value._fields[last]
    if len(value) > 1 or field.type in ("one2many", "many2many"):
        reached = value.mapped(last)
        if isinstance(reached, models.BaseModel):
            return [{"id": item.id, "name": item.display_name} for item in reached]
        return [item for item in reached if item is not False]
    raw = value[last]
    if field.type == "many2one":
        return raw.display_name or None
    if field.type in ("date", "datetime"):
        return raw.isoformat() if raw else None
    if field.type in ("monetary", "float"):
        return float(raw or 0)
    if raw is False and field.type != "boolean":
        return None
    return raw
