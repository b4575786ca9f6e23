from collections import defaultdict

from odoo import api
from odoo import models
from odoo.tools import create_index
from odoo.tools import email_normalize

from ..utils.trace_status import MESSAGE_STATUSES

FAILURE_REASON_MAX_LENGTH = 500

# Statuses after which a mail counts as opened: a reply implies an open.
OPENED_STATUSES = MESSAGE_STATUSES["opened"][0]
# SMS are "sent" once handed to the provider (pending) or delivered (sent).
SMS_SENT_STATUSES = ("pending", "sent")


class MailingTrace(models.Model):
    """Log what happens to each mailing trace as internal marketing events.

    Every way Odoo moves a trace (``set_sent``, ``set_opened``, the mail
    gateway's reply and bounce handling, link clicks, SMS delivery reports)
    ends in ``create`` or ``write``: hooking those two catches them all, and
    each call emits its events in one statement per event type, whatever the
    number of traces.
    """

    _inherit = "mailing.trace"

    def init(self):
        # The frequency caps that count mass mailings read the traces of a
        # batch's contacts (by contact, by email, by phone number) in one query.
        create_index(
            self.env.cr, "mailing_trace_partner_mea_idx", self._table, ["res_id"], where="model = 'res.partner'"
        )
        create_index(self.env.cr, "mailing_trace_email_mea_idx", self._table, ["email"], where="email IS NOT NULL")
        create_index(
            self.env.cr,
            "mailing_trace_sms_number_mea_idx",
            self._table,
            ["sms_number"],
            where="sms_number IS NOT NULL",
        )

    @api.model_create_multi
    def create(self, vals_list):
        traces = super().create(vals_list)
        traces._marketing_emit_status_events(dict.fromkeys(traces.ids))
        return traces

    def write(self, vals):
        clicked = bool(vals.get("links_click_datetime"))
        if "trace_status" not in vals and not clicked:
            return super().write(vals)
        previous_statuses = {trace.id: trace.trace_status for trace in self}
        result = super().write(vals)
        if "trace_status" in vals:
            self._marketing_emit_status_events(previous_statuses)
        if clicked:
            self._marketing_emit_clicks()
        return result

    # ------------------------------------------------------------------
    # Emission
    # ------------------------------------------------------------------

    def _marketing_status_event_keys(self, previous_status):
        """The internal event keys reaching this trace's status from ``previous_status`` means."""
        self.ensure_one()
        status = self.trace_status
        if self.trace_type == "sms":
            keys = []
            if status in SMS_SENT_STATUSES and previous_status not in SMS_SENT_STATUSES:
                keys.append("sms_sent")
            if status == "bounce" and previous_status != "bounce":
                keys.append("sms_bounced")
            return keys
        if self.trace_type != "mail":
            return []
        keys = []
        if status == "sent" and previous_status != "sent":
            keys.append("email_sent")
        if status in OPENED_STATUSES and previous_status not in OPENED_STATUSES:
            keys.append("email_opened")
        if status == "reply" and previous_status != "reply":
            keys.append("email_replied")
        if status == "bounce" and previous_status != "bounce":
            keys.append("email_bounced")
        return keys

    def _marketing_emit_status_events(self, previous_statuses):
        """Emit sent / opened / replied / bounced for the traces whose status just reached it."""
        traces_by_key = defaultdict(self.browse)
        for trace in self:
            for key in trace._marketing_status_event_keys(previous_statuses.get(trace.id)):
                traces_by_key[key] |= trace
        if not traces_by_key:
            return
        traces = self.browse().union(*traces_by_key.values())
        partner_ids = traces._marketing_partner_ids()
        companies = traces._marketing_partner_companies(partner_ids)
        Event = self.env["marketing.event"]
        for key, key_traces in traces_by_key.items():
            suffix = key.split("_", 1)[1]  # email_opened -> opened
            events = []
            for trace in key_traces:
                partner_id = partner_ids.get(trace.id)
                if not partner_id:
                    continue
                params = trace._marketing_event_params()
                if suffix == "bounced":
                    params["failure_type"] = trace.failure_type or None
                    params["failure_reason"] = (trace.failure_reason or "")[:FAILURE_REASON_MAX_LENGTH] or None
                if suffix == "sent":
                    params["delivered"] = trace.trace_status == "sent"
                events.append(
                    {
                        "partner_id": partner_id,
                        "company_id": companies.get(partner_id),
                        "params": params,
                        # An open, a reply, a bounce happens once per trace:
                        # the key keeps a second report of it out of the log.
                        "idempotency_key": f"trace-{trace.id}-{suffix}",
                    }
                )
            Event._emit(key, events)

    def _marketing_emit_clicks(self):
        """Emit one click event per trace, with the link clicked last (clicks may repeat)."""
        traces = self.filtered(lambda trace: trace.trace_type in ("mail", "sms"))
        if not traces:
            return
        # sudo: clicks are recorded for anonymous visitors of a redirect link.
        Click = self.env["link.tracker.click"].sudo()
        last_click_ids = [
            click_id
            for _trace, click_id in Click._read_group(
                [("mailing_trace_id", "in", traces.ids)], ["mailing_trace_id"], ["id:max"]
            )
        ]
        clicks_by_trace = {click.mailing_trace_id.id: click for click in Click.browse(last_click_ids)}
        partner_ids = traces._marketing_partner_ids()
        companies = traces._marketing_partner_companies(partner_ids)
        events_by_key = defaultdict(list)
        for trace in traces:
            partner_id = partner_ids.get(trace.id)
            if not partner_id:
                continue
            params = trace._marketing_event_params()
            click = clicks_by_trace.get(trace.id)
            params.update(
                {
                    "click_id": click.id if click else None,
                    "link_id": click.link_id.id if click else None,
                    "url": click.link_id.url if click else None,
                }
            )
            events_by_key["sms_clicked" if trace.trace_type == "sms" else "email_clicked"].append(
                {
                    "partner_id": partner_id,
                    "company_id": companies.get(partner_id),
                    "params": params,
                    # The same click reported twice is logged once; another
                    # click on the same mail is a new event.
                    "idempotency_key": f"click-{click.id}" if click else None,
                }
            )
        for key, events in events_by_key.items():
            self.env["marketing.event"]._emit(key, events)

    def _marketing_event_params(self):
        """What scenarios may need to know about the mail or SMS behind an event."""
        self.ensure_one()
        mailing = self.mass_mailing_id
        params = {
            "trace_id": self.id,
            "trace_type": self.trace_type,
            "mailing_id": mailing.id or None,
            "mailing_subject": mailing.subject or None,
            "campaign_id": self.campaign_id.id or None,
            "model": self.model,
            "res_id": self.res_id,
        }
        if self.trace_type == "sms":
            params.update({"sms_id": self.sms_id_int or None, "sms_number": self.sms_number or None})
        else:
            params.update({"mail_mail_id": self.mail_mail_id_int or None, "email": self.email or None})
        return params

    def _marketing_partner_ids(self):
        """Map each trace to the contact the event is about, with a few queries for the whole batch.

        - a trace on a contact (``res.partner``) is about that contact;
        - a trace on a record with a ``partner_id`` (a lead, an order...) is
          about that partner;
        - otherwise (a mailing list contact, a record without partner) the
          contact is found by the trace's normalized email, or for an SMS by
          its number; a trace matching no contact emits nothing: the event
          log is about contacts, and the sender of a mailing does not create
          them.
        """
        partner_ids = {}
        for model_name, traces in self.grouped("model").items():
            Model = self.env.get(model_name)
            if Model is None:
                continue
            # sudo: only ids are read, to link the event to its contact.
            Model = Model.sudo().with_context(active_test=False)
            if model_name == "res.partner":
                existing = set(Model.browse({trace.res_id for trace in traces}).exists().ids)
                partner_ids.update({trace.id: trace.res_id for trace in traces if trace.res_id in existing})
                continue
            partner_field = Model._fields.get("partner_id")
            if partner_field and partner_field.type == "many2one" and partner_field.comodel_name == "res.partner":
                records = Model.browse({trace.res_id for trace in traces}).exists()
                partner_of = {record.id: record.partner_id.id for record in records}
                partner_ids.update(
                    {trace.id: partner_of[trace.res_id] for trace in traces if partner_of.get(trace.res_id)}
                )
        unresolved = self.filtered(lambda trace: trace.id not in partner_ids)
        if unresolved:
            Partner = self.env["res.partner"]
            by_email = Partner._marketing_partner_ids_by(
                "email_normalized",
                [email_normalize(trace.email) for trace in unresolved if trace.trace_type == "mail" and trace.email],
            )
            by_phone = Partner._marketing_partner_ids_by(
                "phone_sanitized", unresolved.filtered(lambda trace: trace.trace_type == "sms").mapped("sms_number")
            )
            for trace in unresolved:
                if trace.trace_type == "mail":
                    partner_id = by_email.get(email_normalize(trace.email or ""))
                else:
                    partner_id = by_phone.get(trace.sms_number)
                if partner_id:
                    partner_ids[trace.id] = partner_id
        return partner_ids

    def _marketing_partner_companies(self, partner_ids):
        """The company of each contact, which its events belong to (None for a shared contact)."""
        # sudo: see _marketing_partner_ids.
        partners = self.env["res.partner"].sudo().browse(set(partner_ids.values()))
        return {partner.id: partner.company_id.id or None for partner in partners}
