from odoo.tools import SQL

# Rows changed since the last ANALYZE beyond which statistics are refreshed,
# on top of the number of rows the last ANALYZE counted.
STALE_STATISTICS_MARGIN = 1000


def analyze_if_stale(cr, tables):
    """ANALYZE those of ``tables`` whose rows changed more than their statistics counted; return them.

    The engine's queues grow in bursts: entering a large audience fills the
    steps table at once, and until the next ANALYZE PostgreSQL plans each
    batch as if the table were still small, with hash joins and sorts that
    read the whole queue for every batch. Autovacuum analyzes a table after a
    share of its rows changed, but only at its next pass. A table is analyzed here once the rows changed
    since its last ANALYZE outnumber the rows that ANALYZE counted: one catalog
    read per batch, and a number of ANALYZE runs logarithmic in the table's
    growth. SKIP_LOCKED leaves a table alone while autovacuum works on it.
    """
    cr.execute(
        SQL(
            """
            SELECT s.relname
              FROM pg_stat_user_tables s
              JOIN pg_class c ON c.oid = s.relid
             WHERE s.schemaname = current_schema() AND s.relname IN %s
               AND s.n_mod_since_analyze > GREATEST(c.reltuples, 0) + %s
            """,
            tuple(tables),
            STALE_STATISTICS_MARGIN,
        )
    )
    stale = [row[0] for row in cr.fetchall()]
    if stale:
        cr.execute(SQL("ANALYZE (SKIP_LOCKED) %s", SQL(", ").join(SQL.identifier(table) for table in stale)))
    return stale
