import json
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from odoo.tests import TransactionCase
from odoo.tests import tagged
from odoo.tools import SQL

from ..utils.pg_arrays import array_literal


@tagged("post_install", "-at_install")
class TestArrayLiteral(TransactionCase):
    """The engine's and the event log's arrays are built as text: hostile strings must come back unchanged."""

    def round_trip(self, values, sql_type):
        self.env.cr.execute(SQL("SELECT %s::" + sql_type, array_literal(values)))
        return self.env.cr.fetchone()[0]

    def test_strings_come_back_as_sent(self):
        hostile = [
            "",
            "NULL",
            "null",
            'a"b',
            "back\\slash",
            "\\",
            '\\"',
            "{}",
            "{a,b}",
            "a,b",
            " leading and trailing ",
            "'); DROP TABLE marketing_event; --",
            "line\nbreak\ttab",
            "ünïcødé ✓ 🎉",
            None,
        ]
        self.assertEqual(self.round_trip(hostile, "text[]"), hostile)
        self.assertEqual(self.round_trip(hostile, "varchar[]"), hostile)

    def test_json_numbers_booleans_and_dates(self):
        documents = [json.dumps({"q": 'he said "hi" \\o/', "list": [1, None], "nested": {"{": "}"}}), None]
        self.assertEqual(self.round_trip(documents, "jsonb[]"), [json.loads(documents[0]), None])
        self.assertEqual(self.round_trip([1, None, -7, 2**31 - 1], "int[]"), [1, None, -7, 2**31 - 1])
        self.assertEqual(self.round_trip([True, False, None], "bool[]"), [True, False, None])
        naive = datetime(2026, 3, 29, 1, 30, 15, 123456)
        aware = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
        self.assertEqual(self.round_trip([naive, aware, None], "timestamp[]"), [naive, naive, None])
        self.assertEqual(self.round_trip([], "int[]"), [])
