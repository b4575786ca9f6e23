from collections import defaultdict

from odoo import api
from odoo import fields
from odoo import models
from odoo.tools import SQL

from ..utils.trace_status import COUNTED_STATUSES
from ..utils.trace_status import trace_status_sql

# What a row counts; ``detail`` says which state, result, arm or branch.
MEASURES = [
    ("participant_state", "Participants by final state"),
    ("converted", "Participants who reached the objective"),
    ("step_state", "Steps by state"),
    ("reached", "Participants who reached the node"),
    ("skipped_result", "Skipped steps by reason"),
    ("arm", "Steps of a split by arm"),
    ("branch", "Done steps by branch"),
    ("message_status", "Messages by status"),
]
# A skip reason is a short message; longer ones are cut to stay within a
# B-tree key of the upsert's index.
DETAIL_MAX_LENGTH = 500


class MarketingScenarioDaily(models.Model):
    """The figures of purged runs, per scenario, node and day of entry.

    Written only by the retention purge, in the transaction that deletes the
    participants and steps it counts: a run is either still in the queue or
    counted here, never both. The scenario and node statistics add these
    counts to those of the live rows.
    """

    _name = "marketing.scenario.daily"
    _description = "Scenario Figures per Day"
    _order = "day desc, id desc"
    _log_access = False

    scenario_id = fields.Many2one("marketing.scenario", required=True, ondelete="cascade", index=True, readonly=True)
    node_id = fields.Many2one("marketing.scenario.node", ondelete="cascade", index="btree_not_null", readonly=True)
    company_id = fields.Many2one("res.company", readonly=True, index=True)
    day = fields.Date(required=True, readonly=True, help="The day the participants entered.")
    measure = fields.Selection(MEASURES, required=True, readonly=True)
    detail = fields.Char(required=True, default="", readonly=True)
    count = fields.Integer(readonly=True)
    value = fields.Float(
        readonly=True, help="Conversions: the sum of their values, in the company's currency; 0 for other measures."
    )

    def init(self):
        self.env.cr.execute(
            """
            CREATE UNIQUE INDEX IF NOT EXISTS marketing_scenario_daily_key_uniq
                ON marketing_scenario_daily (scenario_id, COALESCE(node_id, 0), day, measure, detail)
            """
        )

    @api.model
    def _fold_participants(self, participant_ids):
        """Count these participants and their steps (about to be deleted) into their days, in one statement.

        Test runs count nowhere. Every step of a participant is counted under
        the participant's day of entry, so that participants reaching a node,
        distinct within a day, add up across days and batches.
        """
        if not participant_ids:
            return
        for model_name in ("marketing.scenario.participant", "marketing.scenario.step", "mailing.trace"):
            self.env[model_name].flush_model()
        self.flush_model()
        steps = SQL(
            """
            marketing_scenario_step s
            JOIN marketing_scenario_participant p ON p.id = s.participant_id
            """
        )
        message_selects = [
            SQL(
                """
                SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'message_status', %s, count(*), 0
                  FROM %s JOIN mailing_trace t ON t.id = s.trace_id
                 WHERE p.id = ANY(%s) AND NOT p.is_test AND %s
                 GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date
                """,
                status,
                steps,
                list(participant_ids),
                trace_status_sql(status),
            )
            for status in COUNTED_STATUSES
        ]
        self.env.cr.execute(
            SQL(
                """
                WITH folded AS (
                    SELECT p.scenario_id, NULL::int AS node_id, p.company_id, p.entered_at::date AS day,
                           'participant_state' AS measure,
                           (CASE WHEN p.is_control THEN 'control:' ELSE '' END || p.state)::varchar AS detail,
                           count(*) AS count, 0::float8 AS value
                      FROM marketing_scenario_participant p
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test
                     GROUP BY p.scenario_id, p.company_id, p.entered_at::date, p.is_control, p.state
                    UNION ALL
                    -- The dispatcher stores each conversion on its run (converted_at, conversion_value).
                    SELECT p.scenario_id, NULL, p.company_id, p.entered_at::date, 'converted',
                           CASE WHEN p.is_control THEN 'control' ELSE '' END, count(*),
                           COALESCE(sum(p.conversion_value), 0)
                      FROM marketing_scenario_participant p
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test AND p.converted_at IS NOT NULL
                     GROUP BY p.scenario_id, p.company_id, p.entered_at::date, p.is_control
                    UNION ALL
                    SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'step_state', s.state,
                           count(*), 0
                      FROM %(steps)s
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test
                     GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date, s.state
                    UNION ALL
                    SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'reached', '',
                           count(DISTINCT s.participant_id), 0
                      FROM %(steps)s
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test
                     GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date
                    UNION ALL
                    SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'skipped_result',
                           left(COALESCE(s.result, '?'), %(detail_length)s), count(*), 0
                      FROM %(steps)s
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test AND s.state = 'skipped'
                     GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date,
                              left(COALESCE(s.result, '?'), %(detail_length)s)
                    UNION ALL
                    SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'arm', s.arm_node_id::varchar,
                           count(*), 0
                      FROM %(steps)s
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test AND s.arm_node_id IS NOT NULL
                     GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date, s.arm_node_id
                    UNION ALL
                    SELECT s.scenario_id, s.node_id, p.company_id, p.entered_at::date, 'branch', s.branch, count(*), 0
                      FROM %(steps)s
                     WHERE p.id = ANY(%(ids)s) AND NOT p.is_test AND s.state = 'done' AND s.branch IN ('yes', 'no')
                     GROUP BY s.scenario_id, s.node_id, p.company_id, p.entered_at::date, s.branch
                    UNION ALL
                    %(message_selects)s
                )
                INSERT INTO marketing_scenario_daily AS daily
                       (scenario_id, node_id, company_id, day, measure, detail, count, value)
                SELECT * FROM folded
                ON CONFLICT (scenario_id, COALESCE(node_id, 0), day, measure, detail) DO UPDATE
                   SET count = daily.count + EXCLUDED.count, value = daily.value + EXCLUDED.value
                """,
                ids=list(participant_ids),
                steps=steps,
                detail_length=DETAIL_MAX_LENGTH,
                message_selects=SQL(" UNION ALL ").join(message_selects),
            )
        )
        self.invalidate_model()

    @api.model
    def _scenario_totals(self, measure, scenario_ids):
        """{(scenario id, detail): count} of one measure of the purged runs, as far as the user may read them."""
        domain = [("scenario_id", "in", list(scenario_ids)), ("node_id", "=", False)]
        return self._totals(measure, domain, "scenario_id")

    @api.model
    def _scenario_conversion_totals(self, scenario_ids):
        """{(scenario id, "" or "control"): (conversions, their value)} of the purged runs."""
        ids = [scenario_id for scenario_id in scenario_ids if isinstance(scenario_id, int)]
        totals = {}
        if not ids:
            return totals
        for scenario, detail, count, value in self._read_group(
            [("scenario_id", "in", ids), ("node_id", "=", False), ("measure", "=", "converted")],
            ["scenario_id", "detail"],
            ["count:sum", "value:sum"],
        ):
            totals[scenario.id, detail or ""] = (count, value)
        return totals

    @api.model
    def _node_totals(self, measure, node_ids):
        """{(node id, detail): count} of one measure of the purged runs' steps, as far as the user may read them."""
        return self._totals(measure, [("node_id", "in", list(node_ids))], "node_id")

    def _totals(self, measure, domain, key):
        totals = defaultdict(int)
        # Records not saved yet have no figures.
        ids = [record_id for record_id in domain[0][2] if isinstance(record_id, int)]
        if not ids:
            return totals
        domain = [(domain[0][0], "in", ids), *domain[1:]]
        for record, detail, count in self._read_group(
            [*domain, ("measure", "=", measure)], [key, "detail"], ["count:sum"]
        ):
            totals[record.id, detail or ""] += count
        return totals
