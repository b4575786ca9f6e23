import logging
from datetime import datetime
from datetime import time
from datetime import timedelta

import pytz
from dateutil import rrule

from odoo import api
from odoo import fields
from odoo import models
from odoo.addons.base.models.res_partner import _tz_get
from odoo.exceptions import ValidationError
from odoo.tools import SQL

from .marketing_system_automation import check_shared_allowed

_logger = logging.getLogger(__name__)

FREQUENCIES = {"daily": rrule.DAILY, "weekly": rrule.WEEKLY, "monthly": rrule.MONTHLY}
WEEKDAYS = [
    ("0", "Monday"),
    ("1", "Tuesday"),
    ("2", "Wednesday"),
    ("3", "Thursday"),
    ("4", "Friday"),
    ("5", "Saturday"),
    ("6", "Sunday"),
]


class MarketingSystemSchedule(models.Model):
    _name = "marketing.system.schedule"
    _description = "System Automation Schedule"
    _order = "name, id"

    name = fields.Char(required=True, translate=True)
    active = fields.Boolean(default=True)
    company_id = fields.Many2one("res.company", index=True, default=lambda self: self.env.company)
    frequency = fields.Selection(
        [("daily", "Daily"), ("weekly", "Weekly"), ("monthly", "Monthly")], required=True, default="weekly"
    )
    time_of_day = fields.Float(string="At", default=6.0, help="Time of day, in the schedule's time zone.")
    weekday = fields.Selection(WEEKDAYS, default="0", string="On")
    month_day = fields.Integer(string="Day of Month", default=1, help="1 to 28, so that every month has it.")
    tz = fields.Selection(_tz_get, string="Time Zone", required=True, default=lambda self: self.env.user.tz or "UTC")
    last_occurrence = fields.Datetime(readonly=True, copy=False, help="The last occurrence that fired its event.")
    next_occurrence = fields.Datetime(compute="_compute_next_occurrence", store=True, readonly=True)
    automation_ids = fields.One2many("marketing.system.automation", "schedule_id", string="Automations")

    @api.constrains("time_of_day", "month_day")
    def _check_values(self):
        for schedule in self:
            if not 0 <= schedule.time_of_day < 24:
                raise ValidationError(self.env._("At: a time of day between 00:00 and 23:59."))
            if schedule.frequency == "monthly" and not 1 <= schedule.month_day <= 28:
                raise ValidationError(self.env._("Day of Month: between 1 and 28, so that every month has it."))

    @api.model_create_multi
    def create(self, vals_list):
        schedules = super().create(vals_list)
        check_shared_allowed(schedules)
        return schedules

    def write(self, vals):
        result = super().write(vals)
        if "company_id" in vals:
            check_shared_allowed(self)
        return result

    def _rule(self, around_local):
        """The occurrences (naive, local time) from a little before ``around_local`` on."""
        self.ensure_one()
        minutes = round(self.time_of_day * 60)
        # dtstart only anchors the time of day; starting a few weeks back keeps
        # the iteration short whatever the date.
        start = datetime.combine((around_local - timedelta(days=40)).date(), time(minutes // 60, minutes % 60))
        options = {"dtstart": start}
        if self.frequency == "weekly":
            options["byweekday"] = int(self.weekday or 0)
        elif self.frequency == "monthly":
            options["bymonthday"] = self.month_day or 1
        return rrule.rrule(FREQUENCIES[self.frequency], **options)

    def _to_local(self, utc_naive):
        return pytz.utc.localize(utc_naive).astimezone(pytz.timezone(self.tz or "UTC")).replace(tzinfo=None)

    def _to_utc(self, local_naive):
        return (
            pytz.timezone(self.tz or "UTC")
            .localize(local_naive, is_dst=False)
            .astimezone(pytz.utc)
            .replace(tzinfo=None)
        )

    def _occurrence_after(self, moment):
        local = self._to_local(moment)
        return self._to_utc(self._rule(local).after(local))

    def _occurrence_at_or_before(self, moment):
        local = self._to_local(moment)
        occurrence = self._rule(local).before(local, inc=True)
        return occurrence and self._to_utc(occurrence)

    @api.depends("frequency", "time_of_day", "weekday", "month_day", "tz", "last_occurrence", "active")
    def _compute_next_occurrence(self):
        now = fields.Datetime.now()
        for schedule in self:
            if not schedule.active or not schedule.frequency:
                schedule.next_occurrence = False
                continue
            schedule.next_occurrence = schedule._occurrence_after(max(now, schedule.last_occurrence or now))

    @api.model
    def _cron_fire_due(self):
        """Emit one 'schedule_fired' event per due schedule, for its latest due occurrence.

        Occurrences missed while the server was down are not replayed one by
        one: the event fired late covers the whole period since the previous
        one (period_start). The idempotency key (schedule id + occurrence)
        makes two workers firing the same occurrence store one event.
        """
        now = fields.Datetime.now()
        self.flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT id FROM marketing_system_schedule
                 WHERE active AND next_occurrence <= %s
                 ORDER BY next_occurrence, id
                   FOR UPDATE SKIP LOCKED
                """,
                now,
            )
        )
        schedules = self.browse([row[0] for row in self.env.cr.fetchall()])
        events = []
        for schedule in schedules:
            occurrence = schedule._occurrence_at_or_before(now)
            if not occurrence or (schedule.last_occurrence and occurrence <= schedule.last_occurrence):
                continue
            previous = schedule.last_occurrence or schedule._occurrence_at_or_before(occurrence - timedelta(seconds=1))
            events.append(
                {
                    "idempotency_key": f"schedule_fired:{schedule.id}:{occurrence.isoformat()}",
                    "company_id": schedule.company_id.id or None,
                    "occurred_at": occurrence,
                    "params": {
                        "schedule_id": schedule.id,
                        "schedule_name": schedule.name,
                        "frequency": schedule.frequency,
                        "occurrence": fields.Datetime.to_string(occurrence),
                        "period_start": fields.Datetime.to_string(previous) if previous else None,
                        "period_end": fields.Datetime.to_string(occurrence),
                    },
                }
            )
            schedule.last_occurrence = occurrence
        self.env["marketing.event"]._emit("schedule_fired", events)
        if schedules:
            _logger.info("%s schedules fired", len(events))
        return len(events)
