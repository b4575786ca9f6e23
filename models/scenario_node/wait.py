from datetime import datetime
from datetime import time
from datetime import timedelta

import pytz
from dateutil.relativedelta import relativedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import format_datetime

from ...utils.formatting import format_hour

DELAY_UNITS = [
    ("minutes", "Minutes"),
    ("hours", "Hours"),
    ("days", "Days"),
    ("weeks", "Weeks"),
    ("months", "Months"),
    ("years", "Years"),
]
WAIT_MODES = [("delay", "A delay"), ("field", "Until a date of the contact"), ("date", "Until a fixed date")]
DAY_HOURS = 24
DEFAULT_WINDOW = (9.0, 18.0)


class MarketingScenarioNode(models.Model):
    """Waits: a delay, a date (of the contact or fixed) within an optional send window, or an event."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[("wait", "Wait"), ("wait_event", "Wait for event")],
        ondelete={"wait": "cascade", "wait_event": "cascade"},
    )
    wait_mode = fields.Selection(WAIT_MODES, default="delay")
    wait_amount = fields.Integer(string="Duration", default=1)
    wait_unit = fields.Selection(DELAY_UNITS, string="Unit", default="days")
    wait_field_id = fields.Many2one(
        "ir.model.fields",
        string="Contact Date Field",
        ondelete="cascade",
        domain="[('model', '=', 'res.partner'), ('ttype', 'in', ('date', 'datetime'))]",
    )
    wait_yearly = fields.Boolean(
        string="Every Year", help="Roll the date over to its next anniversary (birthdays, contract anniversaries)."
    )
    wait_until = fields.Datetime(string="Until")
    window_enabled = fields.Boolean(string="Send Window")
    window_start = fields.Float(default=DEFAULT_WINDOW[0])
    window_end = fields.Float(default=DEFAULT_WINDOW[1])
    window_timezone = fields.Selection(
        [("contact", "Contact's timezone"), ("scenario", "Scenario's timezone")], default="contact"
    )
    wait_event_type_id = fields.Many2one(
        "marketing.event.type", string="Wait For", ondelete="restrict", domain=[("scope", "=", "contact")]
    )
    wait_event_filter = fields.Char(string="Event Filter", help='e.g. total > 100 and category == "shoes"')

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "wait": {
                "family": "wait",
                "stored_after_run": True,
                "kind": "wait",
                "icon": "fa-hourglass-half",
                "fields": (
                    "wait_mode",
                    "wait_amount",
                    "wait_unit",
                    "wait_field_id",
                    "wait_yearly",
                    "wait_until",
                    "window_enabled",
                    "window_start",
                    "window_end",
                    "window_timezone",
                ),
                "problems": "_wait_problems",
                "constant_due": "_wait_constant_due",
                "due": "_wait_due_dates",
                "describe": "_wait_description",
                "stats": "_wait_stats",
            },
            "wait_event": {
                "family": "wait",
                "kind": "wait",
                "icon": "fa-bell-o",
                "fields": ("wait_amount", "wait_unit", "wait_event_type_id", "wait_event_filter"),
                "branches": ("yes", "no"),
                "problems": "_wait_event_problems",
                "constant_due": "_wait_event_constant_due",
                "describe": "_wait_event_description",
                "stats": "_wait_event_stats",
            },
        }

    @api.constrains("wait_event_filter", "wait_event_type_id")
    def _check_wait_event_filter(self):
        self._check_params_filter("wait_event_filter", "wait_event_type_id")

    def _wait_problems(self):
        problems = []
        if self.wait_mode == "delay" and (self.wait_amount < 0 or not self.wait_unit):
            problems.append(self.env._("give a duration"))
        if self.wait_mode == "field" and not self.wait_field_id:
            problems.append(self.env._("choose the date field of the contact"))
        if self.wait_mode == "date" and not self.wait_until:
            problems.append(self.env._("choose the date to wait for"))
        if self.window_enabled and not 0 <= self.window_start < self.window_end <= DAY_HOURS:
            problems.append(self.env._("the send window must start before it ends, between 00:00 and 24:00"))
        return problems

    def _wait_event_problems(self):
        problems = []
        if not self.wait_event_type_id:
            problems.append(self.env._("choose the event to wait for"))
        if self.wait_amount <= 0:
            problems.append(self.env._("give a timeout"))
        return problems

    # Scheduling -----------------------------------------------------------

    def _delay(self):
        return relativedelta(**{self.wait_unit or "days": self.wait_amount or 0})

    def _wait_constant_due(self, now):
        if self.window_enabled or (self.wait_mode == "field" and self.wait_field_id):
            return None
        if self.wait_mode == "date":
            return max(self.wait_until or now, now)
        return now + self._delay()

    def _wait_event_constant_due(self, now):
        return now + self._delay()

    def _wait_due_dates(self, participants, now):
        if self.wait_mode == "date":
            due = dict.fromkeys(participants.ids, max(self.wait_until or now, now))
        elif self.wait_mode == "field" and self.wait_field_id:
            due = {}
            field_name = self.wait_field_id.name
            scenario_tz = pytz.timezone(self.scenario_id.timezone or "UTC")
            for participant in participants:
                value = participant.partner_id[field_name]
                if not value:
                    due[participant.id] = now
                    continue
                if not isinstance(value, datetime):
                    tz = self._participant_tz(participant, scenario_tz)
                    value = tz.localize(datetime.combine(value, time())).astimezone(pytz.utc).replace(tzinfo=None)
                if self.wait_yearly:
                    while value < now:
                        value += relativedelta(years=1)
                due[participant.id] = max(value, now)
        else:
            due = dict.fromkeys(participants.ids, now + self._delay())
        if self.window_enabled:
            due = self._apply_window(participants, due)
        return due

    def _participant_tz(self, participant, scenario_tz):
        if self.window_timezone == "contact" and participant.partner_id.tz:
            try:
                return pytz.timezone(participant.partner_id.tz)
            except pytz.UnknownTimeZoneError:
                return scenario_tz
        return scenario_tz

    def _apply_window(self, participants, due):
        """Move each due time into the send window (e.g. 09:00-18:00, local time)."""
        scenario_tz = pytz.timezone(self.scenario_id.timezone or "UTC")
        start_h, end_h = self.window_start, self.window_end
        result = {}
        for participant in participants:
            tz = self._participant_tz(participant, scenario_tz)
            local = pytz.utc.localize(due[participant.id]).astimezone(tz)
            hour = local.hour + local.minute / 60 + local.second / 3600
            if start_h <= hour < end_h:
                result[participant.id] = due[participant.id]
                continue
            day = local.date() if hour < start_h else local.date() + timedelta(days=1)
            opening = datetime.combine(day, time(int(start_h), round((start_h - int(start_h)) * 60) % 60))
            result[participant.id] = tz.localize(opening).astimezone(pytz.utc).replace(tzinfo=None)
        return result

    # Handlers -------------------------------------------------------------

    def _run_wait(self, steps):
        return self._done(steps, self.env._("Waited"))

    def _run_wait_event(self, steps):
        # Reached only at the timeout: an arriving event resumes the step before (yes branch).
        return self._done(steps, self.env._("Timed out"), branch="no")

    # Flow canvas ----------------------------------------------------------

    def _wait_stats(self, branch_counts):
        return [
            ("scheduled", self.env._("Waiting"), self.scheduled_count),
            ("processed", self.env._("Done"), self.processed_count),
        ]

    def _wait_event_stats(self, branch_counts):
        return [("scheduled", self.env._("Waiting"), self.scheduled_count), *self._flow_stats_branches(branch_counts)]

    def _wait_description(self):
        timezone = self.scenario_id.timezone
        if self.wait_mode == "field":
            text = self.env._("Until the contact's %(field)s", field=self.wait_field_id.field_description or "?")
            if self.wait_yearly:
                text = self.env._("%(text)s, every year", text=text)
        elif self.wait_mode == "date":
            text = (
                self.env._(
                    "Until %(date)s",
                    date=format_datetime(self.env, self.wait_until, tz=timezone, dt_format="short"),
                )
                if self.wait_until
                else self.env._("Until a date to choose")
            )
        else:
            text = self._flow_duration()
        if self.window_enabled:
            text = self.env._(
                "%(text)s, sent between %(start)s and %(end)s",
                text=text,
                start=format_hour(self.window_start),
                end=format_hour(self.window_end),
            )
        return text

    def _wait_event_description(self):
        text = self.env._(
            "%(event)s within %(duration)s",
            event=self.wait_event_type_id.name or self.env._("an event to choose"),
            duration=self._flow_duration(),
        )
        return f"{text} ({self.wait_event_filter})" if self.wait_event_filter else text

    def _flow_duration(self):
        units = dict(self._fields["wait_unit"]._description_selection(self.env))
        return f"{self.wait_amount} {units.get(self.wait_unit or 'days', '').lower()}"
