import json
from collections import defaultdict

import pytz

from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL
from odoo.tools import format_amount
from odoo.tools import format_datetime

from ...utils.formatting import format_hour
from ...utils.message_pressure import cap_release
from ...utils.message_pressure import quiet_hours_end
from ...utils.payload import phone_e164
from ...utils.trace_status import COUNTED_STATUSES
from ...utils.trace_status import FAILED_TRACE_STATUSES
from ...utils.trace_status import trace_status_sql

# The links mass_mailing never shortens (its own render post-processing list).
LINK_SHORTENING_BLACKLIST = ["/unsubscribe_from_list", "/view", "/cards"]
# mailing_type of the node's own mailing, by node type.
MAILING_TYPES = {"email": "mail", "sms": "sms"}
# The queue that sends each node type's messages: woken once the step batch commits.
QUEUE_CRONS = {"email": "mail.ir_cron_mail_scheduler_action", "sms": "sms.ir_cron_sms_scheduler_action"}
# The contact's address a mass mailing's trace holds, by node type (for the caps that count mass mailings).
TRACE_ADDRESSES = {"email": ("email", "email_normalized"), "sms": ("sms_number", "phone_sanitized")}


class MarketingScenarioNode(models.Model):
    """Messages: an email or an SMS from the node's own mailing, traced like a mass mailing's."""

    _inherit = "marketing.scenario.node"

    node_type = fields.Selection(
        selection_add=[("split",), ("email", "Send email"), ("sms", "Send SMS"), ("exit",)],
        ondelete={"email": "cascade", "sms": "cascade"},
    )
    mailing_id = fields.Many2one("mailing.mailing", ondelete="restrict")

    # Statistics read from the mailing traces (test runs excluded)
    sent_count = fields.Integer(string="Sent", compute="_compute_message_statistics")
    opened_count = fields.Integer(string="Opened", compute="_compute_message_statistics")
    clicked_count = fields.Integer(string="Clicked", compute="_compute_message_statistics")
    replied_count = fields.Integer(string="Replied", compute="_compute_message_statistics")
    bounced_count = fields.Integer(string="Bounced", compute="_compute_message_statistics")
    # Money: the conversions of the contacts the message went to, in the company's currency
    currency_id = fields.Many2one(related="company_id.currency_id", string="Currency")
    revenue = fields.Monetary(
        compute="_compute_revenue", help="Value of the conversions of the contacts this node ran for."
    )
    revenue_per_recipient = fields.Monetary(compute="_compute_revenue")

    @api.model
    def _node_type_info(self):
        return {
            **super()._node_type_info(),
            "email": {
                "family": "message",
                "icon": "fa-envelope-o",
                "fields": ("mailing_id",),
                "problems": "_email_problems",
                "describe": "_message_description",
                "badges": "_message_badges",
                "stats": "_email_stats",
            },
            "sms": {
                "family": "message",
                "icon": "fa-mobile",
                "fields": ("mailing_id",),
                "problems": "_sms_problems",
                "describe": "_message_description",
                "badges": "_message_badges",
                "stats": "_sms_stats",
            },
        }

    # Statistics and drill-down ---------------------------------------------

    def _query_message_steps(self, select, condition):
        """Run ``SELECT <select>`` over this node's real steps joined to their traces (alias t) where ``condition``."""
        # SQL rather than a domain on trace_id: marketers may have no access to mailing traces.
        self.env["marketing.scenario.step"].flush_model(["trace_id", "node_id", "is_test"])
        self.env["mailing.trace"].flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT %s FROM marketing_scenario_step s JOIN mailing_trace t ON t.id = s.trace_id
                 WHERE s.node_id IN %s AND NOT s.is_test AND %s
                 GROUP BY s.node_id
                """,
                select,
                tuple(self.ids),
                condition,
            )
        )
        return self.env.cr.fetchall()

    def _compute_message_statistics(self):
        counts = {}
        real = self.filtered("id")
        if real:
            select = SQL(", ").join(
                [
                    SQL("s.node_id"),
                    *(SQL("count(*) FILTER (WHERE %s)", trace_status_sql(status)) for status in COUNTED_STATUSES),
                ]
            )
            counts = {row[0]: row[1:] for row in real._query_message_steps(select, SQL("TRUE"))}
            counts = real._add_purged_message_counts(counts)
        for node in self:
            sent, opened, clicked, replied, bounced = counts.get(node.id, (0,) * len(COUNTED_STATUSES))
            node.sent_count, node.opened_count, node.clicked_count = sent, opened, clicked
            node.replied_count, node.bounced_count = replied, bounced

    def _compute_revenue(self):
        figures = self.env["marketing.scenario"]._node_revenue_figures(
            [node.id for node in self if node.id and node.node_type in ("email", "sms")]
        )
        for node in self:
            recipients, value = figures.get(node.id, (0, 0.0))
            node.revenue = value
            node.revenue_per_recipient = value / recipients if recipients else 0.0

    def _add_purged_message_counts(self, counts):
        """``counts`` ({node id: counts in COUNTED_STATUSES order}) with the purged runs' messages added."""
        purged = self._purged_step_totals("message_status", self.ids)
        if not purged:
            return counts
        return {
            node_id: tuple(
                live + purged.get((node_id, status), 0)
                for live, status in zip(counts.get(node_id, (0,) * len(COUNTED_STATUSES)), COUNTED_STATUSES)
            )
            for node_id in {*counts, *(node_id for node_id, _status in purged)}
        }

    def _steps_domain(self, which=None):
        """Message statuses (sent, opened, clicked, replied, bounced) are read from the traces, as the counts are."""
        if which not in COUNTED_STATUSES:
            return super()._steps_domain(which)
        self.ensure_one()
        rows = self._query_message_steps(SQL("array_agg(s.id)"), trace_status_sql(which))
        step_ids = rows[0][0] if rows else []
        return [("node_id", "=", self.id), ("is_test", "=", False), ("id", "in", step_ids)]

    # Editing ----------------------------------------------------------------

    @api.model_create_multi
    def create(self, vals_list):
        nodes = super().create(vals_list)
        nodes._create_missing_mailings()
        return nodes

    def write(self, vals):
        result = super().write(vals)
        if "node_type" in vals:
            self._create_missing_mailings()
        return result

    def _create_missing_mailings(self):
        """Give each email/SMS node a mailing of its own, to edit like any other mailing."""
        nodes = self.filtered(lambda node: node.node_type in MAILING_TYPES and not node.mailing_id)
        if not nodes:
            return
        partner_model = self.env["ir.model"]._get("res.partner")
        # sudo: scenario builders edit the node's own mailing; they need no
        # Email Marketing rights to get one created.
        mailings = (
            self.env["mailing.mailing"]
            .sudo()
            .create(
                [
                    {
                        "subject": node.name or node.scenario_id.name,
                        "mailing_type": MAILING_TYPES[node.node_type],
                        "mailing_model_id": partner_model.id,
                        # Sent only by the scenario, never to a whole audience from Email Marketing.
                        "mailing_domain": "[('id', 'in', [])]",
                        "body_html": False,
                    }
                    for node in nodes
                ]
            )
        )
        for node, mailing in zip(nodes, mailings):
            node.write({"mailing_id": mailing.id})

    def _email_problems(self):
        mailing = self.mailing_id
        if not mailing or mailing.mailing_type != "mail":
            return [self.env._("choose an email mailing")]
        if not mailing.subject or not (mailing.body_arch or mailing.body_html):
            return [self.env._("the mailing needs a subject and a body")]
        return []

    def _sms_problems(self):
        mailing = self.mailing_id
        if not mailing or mailing.mailing_type != "sms":
            return [self.env._("choose an SMS mailing (the SMS channel)")]
        if not mailing.body_plaintext:
            return [self.env._("the SMS needs a text")]
        return []

    # Sending ----------------------------------------------------------------

    def _skip_opted_out(self, steps, field_name):
        """Skip the steps whose contact opted out of the mailing lists: (their outcomes, the other steps).

        ``field_name`` is the address compared with the mailing contacts':
        ``email_normalized`` for emails, ``phone_sanitized`` for SMS. As in
        Email Marketing, an address has opted out when it left a mailing list
        and is subscribed to none. Scenario messages go to contacts, not to
        lists, so Odoo's own sending checks only the blacklists for them.
        """
        addresses = [address for address in steps.partner_id.mapped(field_name) if address]
        if not addresses:
            return {}, steps
        # sudo: consent is checked for the scenario, whoever runs the engine.
        subscriptions = (
            self.env["mailing.subscription"]
            .sudo()
            .search_fetch([(f"contact_id.{field_name}", "in", addresses)], ["contact_id", "opt_out"])
        )
        opted_in, opted_out = set(), set()
        for subscription in subscriptions:
            (opted_out if subscription.opt_out else opted_in).add(subscription.contact_id[field_name])
        refused = opted_out - opted_in
        skipped = steps.filtered(lambda step: step.partner_id[field_name] in refused)
        return self._skipped(skipped, self.env._("Opted out of the mailing lists")), steps - skipped

    def _send_messages(self, outcomes, candidates, field_name, send):
        """What both messages share around ``send(mailing, partner_ids, sendable steps)``.

        The steps of ``candidates`` whose contact opted out are skipped; the
        others are sent to, with the node's mailing, and matched with the
        traces the sending created. Returns every step's outcome.
        """
        opted_out, sendable = self._skip_opted_out(candidates, field_name)
        outcomes.update(opted_out)
        held, sendable = self._hold_by_company_rules(sendable)
        outcomes.update(held)
        if not sendable:
            return outcomes
        # sudo: the engine sends on behalf of the scenario, whoever runs the cron.
        mailing = self.mailing_id.sudo()
        before = self._max_trace_id()
        send(mailing, list(dict.fromkeys(sendable.partner_id.ids)), sendable)
        sent = self._map_traces(sendable, before)
        outcomes.update(sent)
        self._stamp_sent_for_caps(sent)
        return outcomes

    def _params_context(self, steps):
        """The triggering events' params by contact, for the templates (``object.marketing_event_params``)."""
        return json.dumps({step.partner_id.id: step.participant_id.event_params or {} for step in steps})

    def _max_trace_id(self):
        self.env["mailing.trace"].flush_model()
        self.env.cr.execute("SELECT COALESCE(max(id), 0) FROM mailing_trace")
        return self.env.cr.fetchone()[0]

    def _map_traces(self, steps, since_trace_id):
        """Match the traces the sending just created to the steps, by contact."""
        traces = self.env["mailing.trace"].search(
            [
                ("id", ">", since_trace_id),
                ("mass_mailing_id", "=", self.mailing_id.id),
                ("model", "=", "res.partner"),
                ("res_id", "in", steps.partner_id.ids),
            ],
            order="id",
        )
        by_partner = defaultdict(list)
        for trace in traces:
            by_partner[trace.res_id].append(trace)
        failure_labels = dict(self.env["mailing.trace"]._fields["failure_type"]._description_selection(self.env))
        outcomes = {}
        for step in steps.sorted("id"):
            traces_left = by_partner[step.partner_id.id]
            trace = traces_left.pop(0) if traces_left else None
            if not trace:
                outcomes.update(self._skipped(step, self.env._("Not sent (no trace)")))
            elif trace.trace_status in FAILED_TRACE_STATUSES:
                reason = failure_labels.get(trace.failure_type) or trace.failure_type or trace.trace_status
                outcomes[step.id] = {"state": "skipped", "branch": "always", "result": reason, "trace_id": trace.id}
            else:
                outcomes[step.id] = {
                    "state": "done",
                    "branch": "always",
                    "result": self.env._("Sent"),
                    "trace_id": trace.id,
                    "wake": QUEUE_CRONS[self.node_type],
                }
        return outcomes

    def _run_email(self, steps):
        outcomes, candidates = self._skip_without_email(steps)
        return self._send_messages(outcomes, candidates, "email_normalized", self._send_emails)

    def _send_emails(self, mailing, partner_ids, sendable):
        # The template's links are shortened once for the whole batch: each
        # rendered mail then holds only short links, which mass_mailing's
        # shortening after rendering skips, where it would otherwise look up
        # the link tracker once per recipient. Links built per contact
        # (t-attf-href) only exist once rendered and are still shortened then.
        body = mailing._shorten_links(
            mailing._prepend_preview(mailing.body_html or "", mailing.preview),
            mailing._get_link_tracker_values(),
            blacklist=LINK_SHORTENING_BLACKLIST,
        )
        composer_values = {
            "auto_delete": not mailing.keep_archives,
            "author_id": (self.scenario_id.user_id.partner_id or self.env.user.partner_id).id,
            "attachment_ids": [(4, attachment.id) for attachment in mailing.attachment_ids],
            "body": body,
            "composition_mode": "mass_mail",
            "email_from": mailing.email_from,
            "mail_server_id": mailing.mail_server_id.id,
            "mass_mailing_id": mailing.id,
            "model": "res.partner",
            "record_name": False,
            "reply_to_force_new": mailing.reply_to_mode == "new",
            "subject": mailing.subject,
            "template_id": False,
        }
        if mailing.reply_to_mode == "new":
            composer_values["reply_to"] = mailing.reply_to
        composer = (
            self.env["mail.compose.message"]
            .sudo()
            .with_context(
                active_ids=partner_ids,
                default_composition_mode="mass_mail",
                marketing_scenario_send=True,
                marketing_event_params=self._params_context(sendable),
                **mailing._get_mass_mailing_context(),
            )
            .create(composer_values)
        )
        # One mail.mail batch for the whole step batch, without the composer's
        # intermediate commits: sending and the steps' states share the transaction.
        mail_values = list(composer._prepare_mail_values(partner_ids).values())
        mails = self.env["mail.mail"].sudo().create(mail_values)
        self.env["res.partner"].browse(partner_ids)._message_mail_after_hook(mails)

    def _run_sms(self, steps):
        country = self.scenario_id.company_id.country_id
        numbers = {
            step.id: phone_e164(step.partner_id.mobile or step.partner_id.phone or "", country.code)
            if (step.partner_id.mobile or step.partner_id.phone)
            else None
            for step in steps
        }
        outcomes = self._skipped(steps.filtered(lambda step: not numbers[step.id]), self.env._("No valid phone number"))
        candidates = steps.filtered(lambda step: numbers[step.id])
        return self._send_messages(outcomes, candidates, "phone_sanitized", self._send_sms)

    def _send_sms(self, mailing, partner_ids, sendable):
        composer = (
            self.env["sms.composer"]
            .sudo()
            .with_context(
                active_id=False,
                marketing_scenario_send=True,
                marketing_event_params=self._params_context(sendable),
            )
            # Never sent from inside the batch (the mailing's "send directly"): the SMS queue sends them once
            # the steps are committed, so a batch that rolls back sends nothing.
            .create({**mailing._send_sms_get_composer_values(partner_ids), "mass_force_send": False})
        )
        composer._action_send_sms()

    # Frequency caps and quiet hours ------------------------------------------

    def _hold_by_company_rules(self, steps):
        """Hold back the messages the company's frequency cap or quiet hours forbid now: (their outcomes, the others).

        A capped message waits for the first moment the cap allows (or is
        skipped, as the scenario says); a message due in quiet hours waits
        for their end, in the contact's timezone (else the scenario's). The
        messages the contacts received lately are read with one query for the
        whole batch; test runs are never held.
        """
        real = steps.filtered(lambda step: not step.is_test)
        rules = self.scenario_id.company_id._marketing_message_rules(self.node_type)
        if not real or not (rules["cap"] or rules["quiet"]):
            return {}, steps
        now = fields.Datetime.now()
        history = self._recent_messages(real, now, rules) if rules["cap"] else {}
        scenario_tz = pytz.timezone(self.scenario_id.timezone or "UTC")
        skip_capped = self.scenario_id.capped_message_policy == "skip"
        outcomes = {}
        for step in real.sorted("id"):
            partner = step.partner_id
            sent_at = history.setdefault(partner.id, [])
            moment, reasons = now, []
            release = cap_release(sent_at, *rules["cap"]) if rules["cap"] else None
            if release and skip_capped:
                outcomes.update(self._skipped(step, self._cap_reason(rules["cap"])))
                continue
            if release:
                moment = release
                reasons.append(self._cap_reason(rules["cap"]))
            tz = self._contact_tz(partner, scenario_tz)
            quiet_end = quiet_hours_end(moment, tz, *rules["quiet"]) if rules["quiet"] else None
            if quiet_end:
                moment = quiet_end
                reasons.append(self._quiet_reason(rules["quiet"], tz))
            if moment <= now:
                sent_at.append(now)  # the contact's next step of this batch counts this one
                continue
            result = self.env._(
                "%(reasons)s: delayed until %(moment)s",
                reasons="; ".join(reasons),
                moment=format_datetime(self.env, moment, tz=tz.zone, dt_format="short"),
            )
            outcomes[step.id] = {"state": "retry", "result": result, "scheduled_at": moment, "attempted": False}
        return outcomes, steps.filtered(lambda step: step.id not in outcomes)

    @staticmethod
    def _contact_tz(partner, fallback):
        try:
            return pytz.timezone(partner.tz) if partner.tz else fallback
        except pytz.UnknownTimeZoneError:
            return fallback

    def _cap_reason(self, cap):
        count, period = cap
        return self.env._(
            "Frequency cap: %(count)s %(channel)s per %(days)s days reached",
            count=count,
            channel=self.env._("emails") if self.node_type == "email" else self.env._("SMS"),
            days=period.days,
        )

    def _quiet_reason(self, quiet, tz):
        return self.env._(
            "Quiet hours %(start)s-%(end)s (%(tz)s)", start=format_hour(quiet[0]), end=format_hour(quiet[1]), tz=tz.zone
        )

    def _recent_messages(self, steps, now, rules):
        """{contact id: [when each message of this channel reached it within the cap's period, in order]}.

        The scenario messages are the sent steps of this company's message
        nodes of the same type (their processing time); with the setting,
        the mass mailings' traces to the contact or to its address too. One
        query for the whole batch.
        """
        partners = steps.partner_id
        since = now - rules["cap"][1]
        Step = self.env["marketing.scenario.step"]
        Step.flush_model(["partner_id", "company_id", "is_test", "processed_at", "trace_id", "node_id"])
        self.flush_model(["node_type", "mailing_id"])
        self.env["mailing.trace"].flush_model()
        parts = [
            SQL(
                """
                SELECT s.partner_id, s.processed_at
                  FROM marketing_scenario_step s
                  JOIN marketing_scenario_node n ON n.id = s.node_id
                  JOIN mailing_trace t ON t.id = s.trace_id
                 WHERE s.partner_id = ANY(%(partners)s) AND s.company_id = %(company)s AND NOT s.is_test
                   AND n.node_type = %(node_type)s AND s.processed_at > %(since)s
                   AND t.trace_status NOT IN %(failed)s
                """,
                partners=partners.ids,
                company=self.scenario_id.company_id.id,
                node_type=self.node_type,
                since=since,
                failed=FAILED_TRACE_STATUSES,
            )
        ]
        if rules["mass_mailings"]:
            column, partner_field = TRACE_ADDRESSES[self.node_type]
            mass_mailing = SQL(
                """
                t.trace_type = %(trace_type)s AND COALESCE(t.sent_datetime, t.create_date) > %(since)s
                AND t.trace_status NOT IN %(failed)s
                AND NOT EXISTS (SELECT 1 FROM marketing_scenario_node mn WHERE mn.mailing_id = t.mass_mailing_id)
                """,
                trace_type=MAILING_TYPES[self.node_type],
                since=since,
                failed=FAILED_TRACE_STATUSES,
            )
            addressed = [(partner.id, partner[partner_field]) for partner in partners if partner[partner_field]]
            parts.append(
                SQL(
                    """
                    SELECT t.res_id, COALESCE(t.sent_datetime, t.create_date)
                      FROM mailing_trace t
                     WHERE t.model = 'res.partner' AND t.res_id = ANY(%(partners)s) AND %(mass_mailing)s
                    """,
                    partners=partners.ids,
                    mass_mailing=mass_mailing,
                )
            )
            if addressed:
                ids, addresses = zip(*addressed)
                parts.append(
                    SQL(
                        """
                        SELECT a.partner_id, COALESCE(t.sent_datetime, t.create_date)
                          FROM unnest(%(ids)s::int[], %(addresses)s::varchar[]) AS a (partner_id, address)
                          JOIN mailing_trace t ON %(column)s = a.address
                         WHERE t.model <> 'res.partner' AND %(mass_mailing)s
                        """,
                        ids=list(ids),
                        addresses=list(addresses),
                        column=SQL.identifier("t", column),
                        mass_mailing=mass_mailing,
                    )
                )
        self.env.cr.execute(
            SQL(
                "SELECT partner_id, array_agg(sent_at ORDER BY sent_at) FROM (%s) m (partner_id, sent_at) GROUP BY 1",
                SQL(" UNION ALL ").join(parts),
            )
        )
        return dict(self.env.cr.fetchall())

    def _stamp_sent_for_caps(self, outcomes):
        """Give the steps just sent their processing time at once, when a cap counts them.

        The batch stores every step's outcome after all its nodes ran: without
        this, a contact whom two scenarios message in the same batch would get
        both messages over the cap. Inside the handler's savepoint, it rolls
        back with the sending.
        """
        sent = [step_id for step_id, outcome in outcomes.items() if outcome["state"] == "done"]
        if not sent or not self.scenario_id.company_id._marketing_message_rules(self.node_type)["cap"]:
            return
        Step = self.env["marketing.scenario.step"]
        Step.flush_model()
        self.env.cr.execute(
            SQL(
                """
                UPDATE marketing_scenario_step s SET processed_at = %(now)s, trace_id = v.trace_id
                  FROM unnest(%(ids)s::int[], %(traces)s::int[]) AS v (id, trace_id)
                 WHERE s.id = v.id
                """,
                now=fields.Datetime.now(),
                ids=sent,
                traces=[outcomes[step_id]["trace_id"] for step_id in sent],
            )
        )
        Step.invalidate_model(["processed_at", "trace_id"])

    # Flow canvas ------------------------------------------------------------

    def _message_description(self):
        # sudo: the node's own mailing; scenario builders need no Email Marketing rights to see its subject.
        mailing = self.mailing_id.sudo()
        return mailing.subject or mailing.display_name or self.env._("No mailing yet")

    def _message_badges(self):
        """The company rules that apply to this message: its frequency cap and quiet hours."""
        rules = self.scenario_id.company_id._marketing_message_rules(self.node_type)
        badges = []
        if rules["cap"]:
            count, period = rules["cap"]
            badges.append(
                {
                    "name": "cap",
                    "label": self.env._("Max %(count)s / %(days)s days", count=count, days=period.days),
                    "title": self._cap_title(),
                }
            )
        if rules["quiet"]:
            start, end = (format_hour(hour) for hour in rules["quiet"])
            badges.append(
                {
                    "name": "quiet",
                    "label": self.env._("Quiet %(start)s-%(end)s", start=start, end=end),
                    "title": self.env._(
                        "No message between %(start)s and %(end)s of the contact's day", start=start, end=end
                    ),
                }
            )
        return badges

    def _cap_title(self):
        if self.scenario_id.capped_message_policy == "skip":
            return self.env._("Frequency cap of the company: a capped message is skipped")
        return self.env._("Frequency cap of the company: a capped message waits for the next allowed moment")

    def _message_stats(self, statuses):
        labels = {
            "sent": self.env._("Sent"),
            "opened": self.env._("Opened"),
            "clicked": self.env._("Clicked"),
            "bounced": self.env._("Bounced"),
        }
        stats = [(status, labels[status], self[f"{status}_count"]) for status in statuses]
        if self.bounced_count:
            stats.append(("bounced", labels["bounced"], self.bounced_count))
        if self.revenue:
            stats.append(("revenue", self.env._("Revenue"), format_amount(self.env, self.revenue, self.currency_id)))
        return stats

    def _email_stats(self, branch_counts):
        return self._message_stats(("sent", "opened", "clicked"))

    def _sms_stats(self, branch_counts):
        return self._message_stats(("sent", "clicked"))
