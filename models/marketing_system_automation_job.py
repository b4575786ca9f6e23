import base64
import json
from datetime import timedelta

from markupsafe import Markup
from markupsafe import escape

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.exceptions import ValidationError
from odoo.osv import expression
from odoo.tools import email_normalize
from odoo.tools import email_split
from odoo.tools.safe_eval import safe_eval

from ..utils.spreadsheet import csv_bytes
from ..utils.spreadsheet import read_address_csv
from ..utils.spreadsheet import xlsx_bytes

JOB_TYPES = [
    ("send_mailing", "Send a mailing"),
    ("export", "Export data"),
    ("import_addresses", "Import addresses"),
    ("list_membership", "Manage list membership"),
    ("send_report", "Send a report"),
]
EXPORT_KINDS = [
    ("events", "Raw events"),
    ("mailing_stats", "Mailing statistics"),
    ("participants", "Scenario participants and step results"),
    ("node_stats", "Scenario node statistics"),
]
EXPORT_PERIODS = [
    ("day", "Last 24 hours"),
    ("week", "Last 7 days"),
    ("month", "Last 30 days"),
    ("event", "Period given by the event (schedule)"),
]
PERIOD_LENGTHS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
# The skipped rows an import names in its message; the file of all of them is attached.
SKIPPED_ROWS_SHOWN = 10
MAILING_STAT_FIELDS = ("expected", "sent", "delivered", "opened", "clicked", "replied", "bounced", "failed", "canceled")


def iso_datetime(value):
    return fields.Datetime.to_string(value) if value else ""


class MarketingSystemAutomationJob(models.Model):
    _name = "marketing.system.automation.job"
    _description = "System Automation Job"
    _order = "sequence, id"

    automation_id = fields.Many2one("marketing.system.automation", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="automation_id.company_id", store=True, index=True)
    sequence = fields.Integer(default=10)
    job_type = fields.Selection(JOB_TYPES, required=True, default="send_mailing")
    summary = fields.Char(compute="_compute_summary")

    # Recipients of exports and reports
    recipient_user_ids = fields.Many2many(
        "res.users",
        "marketing_system_automation_job_user_rel",
        "job_id",
        "user_id",
        string="Send to Users",
    )
    recipient_emails = fields.Char(
        string="Send to Addresses", help="Other addresses, separated by commas: reports@example.com, boss@example.com"
    )

    # send_mailing
    mailing_template_id = fields.Many2one(
        "mailing.mailing",
        ondelete="restrict",
        domain=[("mailing_type", "=", "mail")],
        help="Copied for each run: the copy gets the audience below and is queued for sending.",
    )
    audience = fields.Selection(
        [
            ("event_list", "Mailing list of the event"),
            ("lists", "Chosen mailing lists"),
            ("partner_filter", "Contacts matching a filter"),
            ("segment", "Members of a segment"),
        ],
        default="event_list",
        help="'Mailing list of the event' sends to the list the event names (list_id, e.g. the list just imported).",
    )
    mailing_list_ids = fields.Many2many(
        "mailing.list", "marketing_system_automation_job_mailing_list_rel", "job_id", "list_id", string="Mailing Lists"
    )
    partner_domain = fields.Char(string="Contact Filter", default="[]")
    segment_id = fields.Many2one("marketing.segment", ondelete="restrict")

    # export
    export_kind = fields.Selection(EXPORT_KINDS, default="events")
    export_event_type_ids = fields.Many2many(
        "marketing.event.type",
        "marketing_system_automation_job_event_type_rel",
        "job_id",
        "type_id",
        string="Event Types",
        help="Raw events of these types; empty: every type.",
    )
    export_period = fields.Selection(EXPORT_PERIODS, default="week", string="Period")
    export_format = fields.Selection(
        [("csv", "CSV"), ("xlsx", "Excel (XLSX)"), ("both", "CSV and XLSX")], default="both", string="Format"
    )

    # import_addresses and list_membership
    import_file = fields.Binary(string="Address File (CSV)", attachment=True)
    import_filename = fields.Char()
    target_list_id = fields.Many2one("mailing.list", ondelete="restrict")
    membership_action = fields.Selection(
        [
            ("copy", "Copy contacts to the target list"),
            ("move", "Move contacts to the target list"),
            ("hygiene", "Remove bounced and blacklisted addresses"),
        ],
        default="copy",
    )
    source_list_id = fields.Many2one("mailing.list", string="List", ondelete="restrict")
    contact_domain = fields.Char(string="Contact Filter (Mailing Contacts)", default="[]")
    bounce_threshold = fields.Integer(
        default=3, help="List hygiene removes contacts whose address bounced at least this many times."
    )
    remove_blacklisted = fields.Boolean(default=True, help="List hygiene also removes blacklisted addresses.")

    @api.depends(
        "job_type",
        "mailing_template_id",
        "audience",
        "mailing_list_ids",
        "segment_id",
        "export_kind",
        "export_format",
        "export_period",
        "target_list_id",
        "membership_action",
        "source_list_id",
        "recipient_user_ids",
        "recipient_emails",
    )
    def _compute_summary(self):
        labels = {
            "audience": dict(self._fields["audience"]._description_selection(self.env)),
            "export_kind": dict(self._fields["export_kind"]._description_selection(self.env)),
            "export_format": dict(self._fields["export_format"]._description_selection(self.env)),
            "export_period": dict(self._fields["export_period"]._description_selection(self.env)),
            "membership_action": dict(self._fields["membership_action"]._description_selection(self.env)),
        }
        for job in self:
            recipients = ", ".join(job.recipient_user_ids.mapped("name") + email_split(job.recipient_emails or ""))
            if job.job_type == "send_mailing":
                audience = (
                    ", ".join(job.mailing_list_ids.mapped("name"))
                    if job.audience == "lists"
                    else job.segment_id.name or "?"
                    if job.audience == "segment"
                    else labels["audience"].get(job.audience, "")
                )
                job.summary = f"{job.mailing_template_id.subject or '?'} → {audience}"
            elif job.job_type == "export":
                kind = labels["export_kind"].get(job.export_kind, "")
                period = labels["export_period"].get(job.export_period, "")
                file_format = labels["export_format"].get(job.export_format, "")
                job.summary = f"{kind} ({period}, {file_format}) → {recipients}"
            elif job.job_type == "import_addresses":
                job.summary = (
                    f"{job.import_filename or self.env._('file of the event')} → {job.target_list_id.name or '?'}"
                )
            elif job.job_type == "list_membership":
                action = labels["membership_action"].get(job.membership_action, "")
                target = "" if job.membership_action == "hygiene" else f" → {job.target_list_id.name or '?'}"
                job.summary = f"{action}: {job.source_list_id.name or '?'}{target}"
            else:
                job.summary = self.env._("Statistics of the event's mailing or scenario → %s", recipients)

    @api.model_create_multi
    def create(self, vals_list):
        jobs = super().create(vals_list)
        if any(vals.get("recipient_emails") or vals.get("recipient_user_ids") for vals in vals_list):
            jobs._check_recipients_allowed()
        return jobs

    def write(self, vals):
        result = super().write(vals)
        if vals.get("recipient_emails") or "recipient_user_ids" in vals:
            self._check_recipients_allowed()
        return result

    def _check_recipients_allowed(self):
        """Results go to the company's own users; other addresses are an administrator's setting.

        An export holds the company's contacts and events: a marketing user
        may not send it out of the company.
        """
        if self.env.su or self.env.user.has_group("marketing_event_automation.group_marketing_automation_manager"):
            return
        for job in self:
            if job.recipient_emails:
                raise AccessError(
                    self.env._(
                        "Send to Addresses: only a marketing administrator sends results to addresses "
                        "outside the company's users."
                    )
                )
            company = job.automation_id.company_id
            outsiders = job.recipient_user_ids.filtered(lambda user, company=company: company not in user.company_ids)
            if outsiders or (job.recipient_user_ids and not company):
                raise AccessError(
                    self.env._(
                        "Send to Users: %(users)s are not users of the automation's company.",
                        users=", ".join((outsiders or job.recipient_user_ids).mapped("name")),
                    )
                )

    @api.constrains("recipient_emails")
    def _check_recipient_emails(self):
        for job in self:
            for address in map(str.strip, (job.recipient_emails or "").replace(";", ",").split(",")):
                if address and not email_normalize(address):
                    raise ValidationError(
                        self.env._("Send to Addresses: %(address)r is not a valid email address.", address=address)
                    )

    @api.constrains("partner_domain", "contact_domain")
    def _check_domains(self):
        for job in self:
            for field_name in ("partner_domain", "contact_domain"):
                try:
                    domain = safe_eval(job[field_name] or "[]")
                except Exception as error:
                    raise ValidationError(
                        self.env._(
                            "%(field)s: not a valid domain (%(error)s).",
                            field=self._fields[field_name].string,
                            error=error,
                        )
                    ) from error
                if not isinstance(domain, (list, tuple)):
                    raise ValidationError(
                        self.env._("%(field)s: must be a list of conditions.", field=self._fields[field_name].string)
                    )

    @api.constrains("bounce_threshold")
    def _check_bounce_threshold(self):
        if any(job.bounce_threshold < 1 for job in self):
            raise ValidationError(self.env._("Bounce threshold: must be at least 1."))

    # ------------------------------------------------------------------
    # Execution: each handler returns a dict of results for the run job
    # (message, processed, skipped, attachment_ids, mailing_id), or raises
    # UserError with the reason the job could not be done.
    # ------------------------------------------------------------------

    def _execute(self, run_job):
        self.ensure_one()
        handler = getattr(self, f"_run_{self.job_type}")
        return handler(run_job)

    def _event_params(self, run_job):
        return run_job.run_id.event_id.params or {}

    def _event_record(self, run_job, model_name, keys):
        """The record of ``model_name`` whose id the event gives under one of ``keys``."""
        params = self._event_params(run_job)
        for key in keys:
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return self.env[model_name].browse(value).exists()
        return self.env[model_name]

    def _run_company(self, run_job):
        """The company the run works in: the automation's, else the triggering event's."""
        company = run_job.run_id.company_id
        if not company:
            raise UserError(
                self.env._(
                    "This run belongs to no company (a shared automation and an event without one): "
                    "exports, reports and mailings need a company to keep to."
                )
            )
        return company

    def _recipient_addresses(self):
        # Users who left the company no longer get its results.
        company = self.automation_id.company_id
        users = self.recipient_user_ids
        partners = (users.filtered(lambda user: company in user.company_ids) if company else users).partner_id
        addresses = [email_normalize(address) for address in (self.recipient_emails or "").replace(";", ",").split(",")]
        return partners, [address for address in addresses if address]

    def _attach(self, run_job, name, raw, mimetype):
        return self.env["ir.attachment"].create(
            {
                "name": name,
                "raw": raw,
                "mimetype": mimetype,
                "res_model": "marketing.system.automation.run.job",
                "res_id": run_job.id,
            }
        )

    def _attach_table(self, run_job, basename, header, rows):
        attachments = self.env["ir.attachment"]
        if self.export_format in ("csv", "both"):
            attachments |= self._attach(run_job, f"{basename}.csv", csv_bytes(header, rows), "text/csv")
        if self.export_format in ("xlsx", "both"):
            attachments |= self._attach(
                run_job,
                f"{basename}.xlsx",
                xlsx_bytes(basename, header, rows),
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
        return attachments

    def _queue_mail(self, run_job, subject, body, attachments=None):
        """Queue one mail to the job's recipients; the mail queue cron sends it."""
        partners, addresses = self._recipient_addresses()
        if not partners and not addresses:
            raise UserError(self.env._("Send to: choose at least one user or address to send the result to."))
        company = run_job.run_id.company_id or self.env.company
        return self.env["mail.mail"].create(
            {
                "subject": subject,
                "body_html": body,
                "email_from": company.email_formatted or self.env.user.email_formatted,
                "email_to": ", ".join(addresses),
                "recipient_ids": [fields.Command.set(partners.ids)],
                "attachment_ids": [fields.Command.set(attachments.ids if attachments else [])],
                "auto_delete": False,
            }
        )

    def _period(self, run_job):
        event = run_job.run_id.event_id
        end = event.occurred_at or fields.Datetime.now()
        if self.export_period == "event":
            params = event.params or {}
            try:
                start = fields.Datetime.to_datetime(params.get("period_start"))
                end = fields.Datetime.to_datetime(params.get("period_end")) or end
            except ValueError as error:
                raise UserError(
                    self.env._("Period: the event's period_start/period_end are not dates (%s).", error)
                ) from error
            if not start:
                raise UserError(
                    self.env._("Period: the event gives no period_start; choose a fixed period for this export.")
                )
            return start, end
        return end - PERIOD_LENGTHS[self.export_period or "week"], end

    # send_mailing ------------------------------------------------------

    def _run_send_mailing(self, run_job):
        template = self.mailing_template_id
        if not template:
            raise UserError(self.env._("Mailing Template: choose the mailing to send."))
        values = {
            "name": f"{template.subject} ({self.automation_id.name}, {fields.Datetime.now():%Y-%m-%d %H:%M})",
            "schedule_type": "now",
            "schedule_date": False,
        }
        if self.audience in ("partner_filter", "segment"):
            company = self._run_company(run_job)
            if self.audience == "segment":
                if not self.segment_id:
                    raise UserError(self.env._("Segment: choose the segment to send to."))
                values["marketing_segment_id"] = self.segment_id.id
                audience = self.segment_id._members_domain()
            else:
                audience = safe_eval(self.partner_domain or "[]")
            # The run's company's contacts and the shared ones, never another company's.
            domain = expression.AND([audience, [("company_id", "in", [company.id, False])]])
            values.update(
                {
                    "mailing_model_id": self.env["ir.model"]._get_id("res.partner"),
                    "mailing_domain": repr(domain),
                    "contact_list_ids": [fields.Command.clear()],
                }
            )
        else:
            if self.audience == "lists":
                lists = self.mailing_list_ids
            else:
                params = self._event_params(run_job)
                list_ids = params.get("list_ids") or [params.get("list_id") or params.get("mailing_list_id")]
                lists = (
                    self.env["mailing.list"]
                    .browse(
                        [list_id for list_id in list_ids if isinstance(list_id, int) and not isinstance(list_id, bool)]
                    )
                    .exists()
                )
                if not lists:
                    raise UserError(
                        self.env._("Audience: the event names no existing mailing list (list_id) to send to.")
                    )
            if not lists:
                raise UserError(self.env._("Mailing Lists: choose at least one list to send to."))
            values.update(
                {
                    "mailing_model_id": self.env["ir.model"]._get_id("mailing.list"),
                    "contact_list_ids": [fields.Command.set(lists.ids)],
                }
            )
        # mass_mailing's copy_data forces the template's lists onto the copy:
        # the audience is written once the copy exists.
        audience_fields = ("marketing_segment_id", "mailing_model_id", "mailing_domain", "contact_list_ids")
        mailing = template.copy({name: value for name, value in values.items() if name not in audience_fields})
        mailing.write({name: value for name, value in values.items() if name in audience_fields})
        recipients = mailing._get_remaining_recipients()
        if not recipients:
            mailing.unlink()
            return {"message": self.env._("No recipient in the audience: nothing sent."), "processed": 0}
        # Queued, not sent inline: the mass mailing cron sends in batches and
        # commits as it goes, which must not happen inside this job's savepoint.
        mailing.action_put_in_queue()
        return {
            "message": self.env._(
                "Mailing %(name)s queued for %(count)s recipients.", name=mailing.name, count=len(recipients)
            ),
            "processed": len(recipients),
            "mailing_id": mailing.id,
        }

    # export --------------------------------------------------------------

    def _run_export(self, run_job):
        header, rows, basename = getattr(self, f"_export_{self.export_kind}")(run_job)
        attachments = self._attach_table(run_job, basename, header, rows)
        kind = dict(self._fields["export_kind"]._description_selection(self.env))[self.export_kind]
        subject = self.env._("%(kind)s: %(automation)s", kind=kind, automation=self.automation_id.name)
        body = Markup("<p>%s</p>") % self.env._(
            "%(kind)s, %(count)s rows, attached (%(files)s).",
            kind=kind,
            count=len(rows),
            files=", ".join(attachments.mapped("name")),
        )
        mail = self._queue_mail(run_job, subject, body, attachments)
        return {
            "message": self.env._(
                "%(count)s rows exported to %(files)s and mailed.",
                count=len(rows),
                files=", ".join(attachments.mapped("name")),
            ),
            "processed": len(rows),
            "attachment_ids": attachments.ids,
            "mail_id": mail.id,
        }

    def _export_events(self, run_job):
        start, end = self._period(run_job)
        # (start, end]: consecutive schedule periods never count an event twice.
        domain = [("occurred_at", ">", start), ("occurred_at", "<=", end), ("state", "!=", "rejected")]
        if self.export_event_type_ids:
            domain.append(("type_id", "in", self.export_event_type_ids.ids))
        company = self._run_company(run_job)
        domain.append(("company_id", "in", [company.id, False]))
        events = self.env["marketing.event"].search(domain, order="occurred_at, id")
        header = ["Event ID", "Occurred At", "Received At", "Event Type", "Contact", "Email", "State", "Parameters"]
        rows = [
            [
                event.id,
                iso_datetime(event.occurred_at),
                iso_datetime(event.received_at),
                event.type_id.key,
                event.partner_id.name or "",
                event.partner_id.email or "",
                event.state,
                json.dumps(event.params or {}, ensure_ascii=False, sort_keys=True),
            ]
            for event in events
        ]
        return header, rows, f"events_{start:%Y%m%d}_{end:%Y%m%d}"

    def _export_mailing_stats(self, run_job):
        company = self._run_company(run_job)
        mailings = self._event_record(run_job, "mailing.mailing", ("mailing_id",))
        if not mailings:
            start, end = self._period(run_job)
            # Mailings have no company: a mailing is the company's of its responsible user.
            mailings = self.env["mailing.mailing"].search(
                [("sent_date", ">", start), ("sent_date", "<=", end), ("user_id.company_id", "=", company.id)],
                order="sent_date, id",
            )
        header = ["Mailing ID", "Subject", "Sent On", *(name.capitalize() for name in MAILING_STAT_FIELDS)]
        rows = [
            [
                mailing.id,
                mailing.subject,
                iso_datetime(mailing.sent_date),
                *(mailing[name] for name in MAILING_STAT_FIELDS),
            ]
            for mailing in mailings
        ]
        return header, rows, "mailing_statistics"

    def _event_scenario_domain(self, run_job):
        scenario_id = self._event_params(run_job).get("scenario_id")
        if isinstance(scenario_id, int) and not isinstance(scenario_id, bool):
            return [("scenario_id", "=", scenario_id)]
        return []

    def _export_participants(self, run_job):
        Participant, Step = self.env["marketing.scenario.participant"], self.env["marketing.scenario.step"]
        domain = [*self._event_scenario_domain(run_job), ("company_id", "=", self._run_company(run_job).id)]
        participants = Participant.search([*domain, ("is_test", "=", False)], order="id")
        participant_fields = ["scenario_id", "partner_id", "state", "entered_at", "ended_at", "end_reason"]
        step_fields = ["node_id", "state", "scheduled_at", "processed_at", "result"]
        steps_by_participant = {}
        for step in Step.search([("participant_id", "in", participants.ids)], order="participant_id, id"):
            steps_by_participant.setdefault(step.participant_id.id, []).append(step)
        header = ["Participant ID", *(Participant._fields[name].string for name in participant_fields)]
        header += [f"Step: {Step._fields[name].string}" for name in step_fields]
        rows = []
        for participant in participants:
            base = [participant.id, *(self._cell(participant, name) for name in participant_fields)]
            steps = steps_by_participant.get(participant.id) or [None]
            for step in steps:
                rows.append(base + [self._cell(step, name) if step else "" for name in step_fields])
        return header, rows, "scenario_participants"

    def _export_node_stats(self, run_job):
        Node, Step = self.env["marketing.scenario.node"], self.env["marketing.scenario.step"]
        domain = [*self._event_scenario_domain(run_job), ("company_id", "=", self._run_company(run_job).id)]
        nodes = Node.search(domain, order="id")
        counts = {
            (node.id, state): count
            for node, state, count in Step._read_group(
                [("node_id", "in", nodes.ids), ("is_test", "=", False)], ["node_id", "state"], ["__count"]
            )
        }
        states = [state for state, _label in Step._fields["state"]._description_selection(self.env)]
        header = ["Node ID", "Node", "Scenario", *states, "Total"]
        rows = []
        for node in nodes:
            per_state = [counts.get((node.id, state), 0) for state in states]
            rows.append([node.id, node.display_name, node.scenario_id.display_name, *per_state, sum(per_state)])
        return header, rows, "scenario_node_statistics"

    @staticmethod
    def _cell(record, field_name):
        value = record[field_name]
        field = record._fields[field_name]
        if field.type in ("many2one", "many2many", "one2many"):
            return ", ".join(value.mapped("display_name"))
        if field.type == "datetime":
            return iso_datetime(value)
        if field.type == "json":
            return json.dumps(value or {}, ensure_ascii=False, sort_keys=True)
        if field.type == "selection":
            return value or ""
        return value if isinstance(value, (int, float, str)) and value is not False else (value or "")

    # import_addresses -----------------------------------------------------

    def _run_import_addresses(self, run_job):
        target = self.target_list_id
        if not target:
            raise UserError(self.env._("Target List: choose the mailing list to import into."))
        raw = base64.b64decode(self.import_file) if self.import_file else None
        filename = self.import_filename or "addresses.csv"
        if raw is None:
            attachment = self._event_record(run_job, "ir.attachment", ("attachment_id",))
            if not attachment:
                raise UserError(
                    self.env._("Address File: attach a CSV file to the job or emit the event with an attachment_id.")
                )
            raw, filename = attachment.raw, attachment.name
        try:
            rows = read_address_csv(raw)
        except ValueError as error:
            raise UserError(self.env._("Address File %(file)s: %(reason)s.", file=filename, reason=error)) from error

        skipped = []  # (row number, value, reason)
        valid = {}  # normalized email -> (row number, email, name)
        for row_number, email, name in rows:
            normalized = email_normalize(email)
            if not normalized:
                skipped.append(
                    (row_number, email, self.env._("empty email") if not email else self.env._("invalid email"))
                )
            elif normalized in valid:
                skipped.append((row_number, email, self.env._("duplicate of row %s, merged", valid[normalized][0])))
            else:
                valid[normalized] = (row_number, email, name)

        Contact = self.env["mailing.contact"].with_context(active_test=False)
        existing = {}
        for contact in Contact.search([("email_normalized", "in", list(valid))], order="id"):
            existing.setdefault(contact.email_normalized, contact)
        subscriptions = {
            subscription.contact_id.id: subscription
            for subscription in self.env["mailing.subscription"].search(
                [("list_id", "=", target.id), ("contact_id", "in", [contact.id for contact in existing.values()])]
            )
        }
        to_subscribe, already = [], 0
        for normalized, (row_number, email, _name) in valid.items():
            contact = existing.get(normalized)
            if not contact:
                continue
            subscription = subscriptions.get(contact.id)
            if subscription and subscription.opt_out:
                skipped.append((row_number, email, self.env._("opted out of %s, left out", target.name)))
            elif subscription:
                already += 1
            else:
                to_subscribe.append(contact.id)
        self.env["mailing.subscription"].create(
            [{"contact_id": contact_id, "list_id": target.id} for contact_id in to_subscribe]
        )
        created = Contact.create(
            [
                {"email": email, "name": name or email, "list_ids": [fields.Command.link(target.id)]}
                for normalized, (_row, email, name) in valid.items()
                if normalized not in existing
            ]
        )
        self._invalidate_memberships()
        attachments = self.env["ir.attachment"]
        if skipped:
            attachments = self._attach(
                run_job,
                f"skipped_{filename.rsplit('.', 1)[0]}.csv",
                csv_bytes(["Row", "Email", "Reason"], sorted(skipped)),
                "text/csv",
            )
        message = self.env._(
            "%(rows)s rows imported into %(list)s: %(created)s new contacts, %(merged)s existing contacts added, "
            "%(already)s already in the list, %(skipped)s skipped.",
            rows=len(rows),
            list=target.name,
            created=len(created),
            merged=len(to_subscribe),
            already=already,
            skipped=len(skipped),
        )
        if skipped:
            reasons = "; ".join(f"row {row}: {reason}" for row, _value, reason in sorted(skipped)[:SKIPPED_ROWS_SHOWN])
            message += "\n" + reasons + ("..." if len(skipped) > SKIPPED_ROWS_SHOWN else "")
        return {
            "message": message,
            "processed": len(created) + len(to_subscribe),
            "skipped": len(skipped),
            "attachment_ids": attachments.ids,
        }

    # list_membership ------------------------------------------------------

    def _invalidate_memberships(self):
        """Subscriptions were written directly: the lists' and contacts' cached memberships are stale."""
        self.env["mailing.contact"].invalidate_model(["list_ids", "subscription_ids"])
        self.env["mailing.list"].invalidate_model(["contact_ids", "subscription_ids"])

    def _run_list_membership(self, run_job):
        source = self.source_list_id
        if not source:
            raise UserError(self.env._("List: choose the mailing list to work on."))
        Subscription = self.env["mailing.subscription"]
        if self.membership_action == "hygiene":
            domain = [("list_id", "=", source.id)]
            conditions = [[("contact_id.message_bounce", ">=", self.bounce_threshold)]]
            if self.remove_blacklisted:
                conditions.append([("contact_id.is_blacklisted", "=", True)])
            subscriptions = Subscription.search(expression.AND([domain, expression.OR(conditions)]))
            blacklisted = subscriptions.filtered(lambda subscription: subscription.contact_id.is_blacklisted)
            bounced = subscriptions - blacklisted
            subscriptions.unlink()
            self._invalidate_memberships()
            return {
                "message": self.env._(
                    "%(count)s addresses removed from %(list)s: %(bounced)s bounced, %(blacklisted)s blacklisted.",
                    count=len(subscriptions),
                    list=source.name,
                    bounced=len(bounced),
                    blacklisted=len(blacklisted),
                ),
                "processed": len(subscriptions),
            }
        target = self.target_list_id
        if not target or target == source:
            raise UserError(self.env._("Target List: choose a list other than the source list."))
        contact_domain = safe_eval(self.contact_domain or "[]")
        subscriptions = Subscription.search(
            [("list_id", "=", source.id), ("contact_id", "any", contact_domain)]
            if contact_domain
            else [("list_id", "=", source.id)]
        )
        opted_out = subscriptions.filtered("opt_out")
        candidates = subscriptions - opted_out
        in_target = set(
            Subscription.search([("list_id", "=", target.id), ("contact_id", "in", candidates.contact_id.ids)])
            .mapped("contact_id")
            .ids
        )
        added = candidates.filtered(lambda subscription: subscription.contact_id.id not in in_target)
        Subscription.create([{"contact_id": contact_id, "list_id": target.id} for contact_id in added.contact_id.ids])
        if self.membership_action == "move":
            candidates.unlink()
        self._invalidate_memberships()
        verb = self.env._("moved") if self.membership_action == "move" else self.env._("copied")
        return {
            "message": self.env._(
                "%(count)s contacts %(verb)s from %(origin)s to %(target)s (%(already)s already there); "
                "%(opted_out)s opted out of %(origin)s left out.",
                count=len(candidates),
                verb=verb,
                origin=source.name,
                target=target.name,
                already=len(candidates) - len(added),
                opted_out=len(opted_out),
            ),
            "processed": len(candidates),
            "skipped": len(opted_out),
        }

    # send_report ------------------------------------------------------------

    def _run_send_report(self, run_job):
        mailing = self._event_record(run_job, "mailing.mailing", ("mailing_id",))
        if mailing and mailing.user_id.company_id not in (self._run_company(run_job), self.env["res.company"]):
            raise UserError(self.env._("The mailing of the event belongs to another company."))
        if mailing:
            title = self.env._("Mailing report: %s", mailing.subject)
            rows = [(self.env._("Sent on"), iso_datetime(mailing.sent_date))] + [
                (mailing._fields[name].string, mailing[name]) for name in MAILING_STAT_FIELDS
            ]
            rows += [
                (mailing._fields[name].string, f"{mailing[name]:.2f} %")
                for name in ("received_ratio", "opened_ratio", "bounced_ratio")
            ]
        elif isinstance(self._event_params(run_job).get("scenario_id"), int):
            rows, title = self._scenario_report_rows(run_job)
        else:
            raise UserError(
                self.env._("The event names no mailing (mailing_id) or scenario (scenario_id) to report on.")
            )
        body = Markup("<h3>%s</h3><table>%s</table>") % (
            title,
            Markup("").join(
                Markup("<tr><td>%s</td><td style='text-align: right; padding-left: 16px'>%s</td></tr>")
                % (escape(label), escape(value))
                for label, value in rows
            ),
        )
        mail = self._queue_mail(run_job, title, body)
        return {"message": self.env._("%s mailed.", title), "processed": 1, "mail_id": mail.id}

    def _scenario_report_rows(self, run_job):
        Participant = self.env["marketing.scenario.participant"]
        scenario = self.env["marketing.scenario"].browse(self._event_params(run_job)["scenario_id"]).exists()
        if not scenario:
            raise UserError(self.env._("The scenario of the event no longer exists."))
        if scenario.company_id != self._run_company(run_job):
            raise UserError(self.env._("The scenario of the event belongs to another company."))
        title = self.env._("Scenario report: %s", scenario.display_name)
        counts = Participant._read_group([("scenario_id", "=", scenario.id)], ["state"], ["__count"])
        labels = dict(Participant._fields["state"]._description_selection(self.env))
        rows = [(labels.get(state, state), count) for state, count in counts]
        rows.append((self.env._("Participants"), sum(count for _state, count in counts)))
        return rows, title
