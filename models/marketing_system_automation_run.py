import logging
from datetime import timedelta

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.tools import SQL

_logger = logging.getLogger(__name__)

RUN_STATES = [("pending", "Pending"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")]
RUN_BATCH_SIZE = 20
MAX_ATTEMPTS = 5
# A failed run waits this long times its number of attempts before the
# next try, so a broken mail server is not hammered every few minutes.
RETRY_DELAY = timedelta(minutes=5)


class MarketingSystemAutomationRun(models.Model):
    _name = "marketing.system.automation.run"
    _description = "System Automation Run"
    _order = "id desc"

    automation_id = fields.Many2one(
        "marketing.system.automation", required=True, ondelete="cascade", index=True, readonly=True
    )
    event_id = fields.Many2one(
        "marketing.event", string="Triggering Event", ondelete="set null", index=True, readonly=True
    )
    event_type_id = fields.Many2one(related="event_id.type_id")
    event_params_display = fields.Text(related="event_id.params_display", string="Event Parameters")
    company_id = fields.Many2one("res.company", index=True, readonly=True)
    state = fields.Selection(RUN_STATES, required=True, default="pending", index=True, readonly=True)
    attempt_count = fields.Integer(string="Attempts", default=0, readonly=True)
    next_attempt_at = fields.Datetime(
        readonly=True, help="A failed run is tried again by the first cron run after this time."
    )
    started_at = fields.Datetime(readonly=True)
    finished_at = fields.Datetime(readonly=True)
    error_message = fields.Text(readonly=True)
    run_job_ids = fields.One2many("marketing.system.automation.run.job", "run_id", string="Job Results", readonly=True)

    _sql_constraints = [
        (
            "automation_event_uniq",
            "UNIQUE(automation_id, event_id)",
            "An automation runs once per triggering event.",
        ),
    ]

    @api.depends("automation_id", "event_id")
    def _compute_display_name(self):
        for run in self:
            run.display_name = f"{run.automation_id.name} #{run.id}" if run.id else run.automation_id.name or ""

    @api.model
    def _due_runs_query(self, limit=None):
        query = SQL(
            """
            SELECT run.id FROM marketing_system_automation_run run
              JOIN marketing_system_automation automation ON automation.id = run.automation_id
             WHERE run.state IN ('pending', 'failed')
               AND COALESCE(run.attempt_count, 0) < %(max_attempts)s
               AND (run.next_attempt_at IS NULL OR run.next_attempt_at <= %(now)s)
               -- an archived automation is on hold: its runs wait until it is active again
               AND automation.active
             ORDER BY run.id
            """,
            max_attempts=MAX_ATTEMPTS,
            now=fields.Datetime.now(),
        )
        if limit:
            query = SQL("%s LIMIT %s FOR UPDATE OF run SKIP LOCKED", query, limit)
        return query

    @api.model
    def _cron_run(self, batch_size=RUN_BATCH_SIZE):
        """Execute one batch of due runs; the cron runner commits and calls again while some remain."""
        self.flush_model()
        self.env["marketing.system.automation"].flush_model(["active"])
        # SKIP LOCKED: several cron workers share the queue, a run is executed
        # by one of them only.
        self.env.cr.execute(self._due_runs_query(limit=batch_size))
        runs = self.browse([row[0] for row in self.env.cr.fetchall()])
        runs._execute()
        self.flush_model()
        self.env.cr.execute(SQL("SELECT count(*) FROM (%s) AS due", self._due_runs_query()))
        remaining = self.env.cr.fetchone()[0]
        self.env["ir.cron"]._notify_progress(done=len(runs), remaining=remaining)
        return len(runs)

    def _execute(self):
        """Run the jobs of each run in order, each in a savepoint.

        Jobs done by an earlier attempt are skipped, so a retry never sends
        a mailing or a report twice; the first failing job stops the run, so
        later jobs never run on the missing result of an earlier one.
        """
        for run in self:
            now = fields.Datetime.now()
            run.write(
                {
                    "state": "running",
                    "started_at": run.started_at or now,
                    "attempt_count": run.attempt_count + 1,
                    "error_message": False,
                }
            )
            error_message = False
            for run_job in run.run_job_ids.sorted(lambda run_job: (run_job.sequence, run_job.id)):
                if run_job.state in ("done", "canceled"):
                    continue
                job = run_job.job_id
                if not job:
                    run_job.write(
                        {
                            "state": "canceled",
                            "message": self.env._("The job was removed from the automation."),
                            "finished_at": fields.Datetime.now(),
                        }
                    )
                    continue
                try:
                    with self.env.cr.savepoint():
                        result = job.with_company(run.company_id or self.env.company)._execute(run_job)
                        run_job._record_success(result)
                # Any error of a job is recorded on it; the next runs go on.
                except Exception as error:
                    reason = error.args[0] if isinstance(error, UserError) and error.args else str(error)
                    _logger.warning(
                        "System automation %s (run %s): job %s failed: %s",
                        run.automation_id.id,
                        run.id,
                        job.id,
                        reason,
                        exc_info=not isinstance(error, UserError),
                    )
                    run_job.write({"state": "failed", "message": reason, "finished_at": fields.Datetime.now()})
                    error_message = self.env._(
                        "Job %(sequence)s (%(type)s) failed: %(reason)s",
                        sequence=run_job.sequence,
                        type=run_job.job_type_label,
                        reason=reason,
                    )
                    break
            now = fields.Datetime.now()
            if error_message:
                run.write(
                    {
                        "state": "failed",
                        "error_message": error_message,
                        "finished_at": now,
                        "next_attempt_at": now + RETRY_DELAY * run.attempt_count,
                    }
                )
            else:
                run.write({"state": "done", "finished_at": now, "next_attempt_at": False})

    def action_retry(self):
        """Try failed runs again at the next cron run, with a fresh count of attempts."""
        failed = self.filtered(lambda run: run.state == "failed")
        # sudo: runs are written by the runner only; a manager may ask it to
        # try again, which resets the retry bookkeeping and nothing else.
        failed.sudo().write({"attempt_count": 0, "next_attempt_at": False})
        if failed:
            self.env.ref("marketing_event_automation.ir_cron_run_system_automations")._trigger()
        return True
