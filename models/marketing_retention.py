import time

from dateutil.relativedelta import relativedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL

# Rows deleted per statement: each batch is one short transaction.
PURGE_BATCH_SIZE = 10000
# Participants per batch: their steps go with them, a handful each.
RUNS_PER_STEP_BATCH = 10
# The share of the time the purge may keep busy (its process and its
# PostgreSQL backend): the rest of each batch's time it pauses.
PURGE_TIME_SHARE_PARAM = "marketing_event_automation.purge_time_share"
DEFAULT_PURGE_TIME_SHARE = 10
# Odoo's cron workers are killed past limit_time_real_cron (by default 120 s per
# job run, that is up to ten calls): a pause never exceeds this.
PURGE_PAUSE_MAX_SECONDS = 5.0


class MarketingRetention(models.AbstractModel):
    """The purge of what each company keeps only for a while: events, finished runs, score history.

    One batch per call, of the first kind of rows that has some left; the
    cron runner commits after each call and calls again while there is
    more, and the next run resumes where a stopped one left off. Batches
    lock only the rows they delete, SKIP LOCKED, so the API and the engine
    never wait for the purge: a row another transaction holds is left for a
    later batch. Nor do they compete for long with them for the CPU: in a
    cron job, the purge pauses after each batch so that it keeps the machine
    busy only its share of the time (Settings, *Retention*). Rows still in
    work (pending events, running participants, scheduled steps) are never
    deleted. What the statistics need of the deleted rows is counted into
    daily aggregates in the same transaction.
    """

    _name = "marketing.retention"
    _description = "Marketing Automation Retention"

    @api.model
    def _cron_purge(self, batch_size=PURGE_BATCH_SIZE):
        started = time.monotonic()
        deleted = self._purge_batch(batch_size)
        if deleted and self.env.context.get("cron_id"):
            pause = self._purge_pause(time.monotonic() - started)
            if pause:
                # Committed first: the pause then holds no lock and no
                # snapshot; the cron runner commits after each call anyway.
                self.env.cr.commit()  # pylint: disable=invalid-commit
                time.sleep(pause)
        return deleted

    @api.model
    def _purge_pause(self, busy_seconds):
        """Seconds to pause after a batch that took ``busy_seconds``, for the purge to keep its share of the time."""
        # sudo: the setting is a system parameter; the cron's user only reads it.
        share = self.env["ir.config_parameter"].sudo().get_param(PURGE_TIME_SHARE_PARAM, DEFAULT_PURGE_TIME_SHARE)
        try:
            share = min(max(int(share), 1), 100)
        except ValueError:
            share = DEFAULT_PURGE_TIME_SHARE
        return min(busy_seconds * (100 - share) / share, PURGE_PAUSE_MAX_SECONDS)

    @api.model
    def _purge_batch(self, batch_size):
        """Delete one batch of the first kind of rows that has some left; report the progress; return how many."""
        purges = (
            self.env["marketing.event"]._purge_anonymous_events,
            self._purge_events,
            self._purge_runs,
            self._purge_score_history,
        )
        for purge in purges:
            deleted = purge(batch_size)
            if deleted:
                # The next call tries again: this kind may have more, the next kinds surely may.
                self.env["ir.cron"]._notify_progress(done=deleted, remaining=1)
                return deleted
        self.env["ir.cron"]._notify_progress(done=0, remaining=0)
        return 0

    @api.model
    def _cutoffs(self, months_field):
        """``(company ids, cutoffs)`` of the companies that keep rows ``months_field`` months, 0 for shared rows.

        Shared rows (no company) are kept as long as the company keeping its
        rows the longest does, and forever when one keeps them forever.
        """
        now = fields.Datetime.now()
        # Every company's setting, archived ones too: their rows age as well.
        self.env["res.company"].flush_model([months_field])
        self.env.cr.execute(SQL("SELECT id, %s FROM res_company", SQL.identifier(months_field)))
        months = dict(self.env.cr.fetchall())
        cutoffs = {company_id: now - relativedelta(months=n) for company_id, n in months.items() if n > 0}
        if cutoffs and all(months.values()):
            cutoffs[0] = min(cutoffs.values())
        return list(cutoffs), list(cutoffs.values())

    def _cutoff_sql(self, months_field, company_sql):
        """``(cutoff, latest cutoff)``: the SQL of the cutoff of the company ``company_sql`` names, None if none.

        A scalar subquery per row rather than a join: PostgreSQL then reads the
        rows in the date index's order and stops at the batch's size; joined to
        the companies' cutoffs it expected few rows and sorted every expired
        one at each batch.
        """
        company_ids, cutoffs = self._cutoffs(months_field)
        if not company_ids:
            return None
        cutoff = SQL(
            "(SELECT policy.cutoff FROM unnest(%s::int[], %s::timestamp[]) AS policy (company_id, cutoff)"
            " WHERE policy.company_id = %s)",
            company_ids,
            cutoffs,
            company_sql,
        )
        return cutoff, max(cutoffs)

    @api.model
    def _purge_events(self, batch_size):
        """Delete one batch of events older than their company keeps them; return how many."""
        policy = self._cutoff_sql("marketing_event_retention_months", SQL("COALESCE(e.company_id, 0)"))
        if not policy:
            return 0
        cutoff, latest_cutoff = policy
        Event = self.env["marketing.event"]
        Event.flush_model()
        self.env.cr.execute(
            SQL(
                """
                SELECT e.id
                  FROM marketing_event e
                 WHERE e.received_at < %s AND e.received_at < %s AND e.state <> 'pending'
                 ORDER BY e.received_at
                 LIMIT %s
                   FOR UPDATE OF e SKIP LOCKED
                """,
                latest_cutoff,
                cutoff,
                batch_size,
            )
        )
        return Event._delete_folded([row[0] for row in self.env.cr.fetchall()])

    @api.model
    def _purge_runs(self, batch_size):
        """Delete one batch of finished runs (participants and their steps); return how many rows went."""
        policy = self._cutoff_sql("marketing_run_retention_months", SQL("p.company_id"))
        if not policy:
            return 0
        cutoff, latest_cutoff = policy
        for model_name in ("marketing.scenario.participant", "marketing.scenario.step", "marketing.scenario"):
            self.env[model_name].flush_model()
        # A run whose objective may still be reached stays: its conversion is
        # counted when it is purged.
        self.env.cr.execute(
            SQL(
                """
                SELECT p.id
                  FROM marketing_scenario_participant p
                 WHERE p.ended_at < %(latest)s AND p.ended_at < %(cutoff)s AND p.state <> 'running'
                   AND NOT EXISTS (
                        SELECT 1 FROM marketing_scenario s
                         WHERE s.id = p.scenario_id AND s.objective_event_type_id IS NOT NULL
                           AND p.entered_at + make_interval(days => s.objective_days) >= %(now)s
                   )
                   AND NOT EXISTS (
                        SELECT 1 FROM marketing_scenario_step st
                         WHERE st.participant_id = p.id AND st.state = 'scheduled'
                   )
                 ORDER BY p.ended_at
                 LIMIT %(limit)s
                   FOR UPDATE OF p SKIP LOCKED
                """,
                cutoff=cutoff,
                latest=latest_cutoff,
                now=fields.Datetime.now(),
                limit=max(batch_size // RUNS_PER_STEP_BATCH, 1),
            )
        )
        participant_ids = [row[0] for row in self.env.cr.fetchall()]
        if not participant_ids:
            return 0
        self.env["marketing.scenario.daily"]._fold_participants(participant_ids)
        cr = self.env.cr
        cr.execute(SQL("DELETE FROM marketing_scenario_step WHERE participant_id = ANY(%s)", participant_ids))
        deleted = cr.rowcount
        cr.execute(SQL("DELETE FROM marketing_scenario_participant WHERE id = ANY(%s)", participant_ids))
        deleted += cr.rowcount
        self.env["marketing.scenario.step"].invalidate_model()
        self.env["marketing.scenario.participant"].invalidate_model()
        return deleted

    @api.model
    def _purge_score_history(self, batch_size):
        """Delete one batch of score changes older than their company keeps them; return how many."""
        policy = self._cutoff_sql("marketing_score_history_retention_months", SQL("COALESCE(log.company_id, 0)"))
        if not policy:
            return 0
        cutoff, latest_cutoff = policy
        Log = self.env["marketing.engagement.log"]
        Log.flush_model()
        self.env.cr.execute(
            SQL(
                """
                DELETE FROM marketing_engagement_log
                 WHERE id IN (
                        SELECT log.id
                          FROM marketing_engagement_log log
                         WHERE log.changed_at < %s AND log.changed_at < %s
                         ORDER BY log.changed_at
                         LIMIT %s
                           FOR UPDATE OF log SKIP LOCKED
                       )
                """,
                latest_cutoff,
                cutoff,
                batch_size,
            )
        )
        deleted = self.env.cr.rowcount
        Log.invalidate_model()
        return deleted
