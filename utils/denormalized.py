"""A stored many-to-one copied from another column of the same row, without a foreign key of its own."""

from odoo import fields
from odoo.tools import SQL


class CopiedMany2one(fields.Many2one):
    """A stored related many-to-one whose integrity another foreign key of its row already keeps.

    The engine's queue rows (participants, steps) carry copies of their
    parent's scenario and company so that their queries filter without a
    join. Each copy's foreign key would be checked on every row inserted,
    hundreds of thousands at a time, for a value PostgreSQL already checked
    on the parent: the row's own foreign key to that parent (``ON DELETE
    CASCADE``) removes it with the record the copy points to, and the ORM
    recomputes the copy when the parent's value changes.
    """

    def update_db_foreign_key(self, model, column):
        return


def drop_foreign_keys(cr, table, columns):
    """Drop the foreign keys of ``table`` on ``columns`` that an earlier version created, with their records."""
    for column in columns:
        name = f"{table}_{column}_fkey"
        cr.execute(SQL("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", SQL.identifier(table), SQL.identifier(name)))
        cr.execute(SQL("DELETE FROM ir_model_constraint WHERE name = %s AND type = 'f'", name))
