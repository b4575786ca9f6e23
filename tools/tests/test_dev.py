"""The test command's verdict: red on a failure, a skip, an ERROR log or no test at all."""

import contextlib
import io
import unittest

from tools.dev import summarize


def report(**overrides):
    values = {"exit_code": 0, "tests_run": 12, "failures": 0, "errors": 0, "skipped": 0, "severe_log_records": []}
    values.update(overrides)
    return values


def verdict(result, returncode=0):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = summarize(result, returncode, 1.0)
    return code, output.getvalue().strip().splitlines()


class TestSummarize(unittest.TestCase):
    def test_green_run(self):
        code, lines = verdict(report())
        self.assertEqual(code, 0)
        self.assertEqual(lines[-1], "12 passed, 0 failed")

    def test_failing_test_is_red(self):
        code, lines = verdict(report(failures=1, exit_code=1), returncode=1)
        self.assertEqual(code, 1)
        self.assertEqual(lines[-1], "11 passed, 1 failed")

    def test_erroring_test_is_red(self):
        code, lines = verdict(report(errors=2, exit_code=1), returncode=1)
        self.assertEqual((code, lines[-1]), (1, "10 passed, 2 failed"))

    def test_skipped_tour_is_red(self):
        code, lines = verdict(report(skipped=1))
        self.assertEqual(code, 1)
        self.assertEqual(lines[-1], "11 passed, 1 failed")
        self.assertTrue(any("skipped" in line for line in lines))

    def test_error_log_is_red(self):
        code, lines = verdict(report(severe_log_records=["ERROR odoo.modules.loading: boom"]))
        self.assertEqual(code, 1)
        self.assertTrue(any("boom" in line for line in lines))
        self.assertEqual(lines[-1], "12 passed, 1 failed")

    def test_no_test_is_red(self):
        code, lines = verdict(report(tests_run=0))
        self.assertEqual(code, 1)
        self.assertIn("FAILED: no test ran", lines)

    def test_missing_report_is_red(self):
        code, lines = verdict(None, returncode=255)
        self.assertEqual(code, 1)
        self.assertEqual(lines[-1], "0 passed, 1 failed")


if __name__ == "__main__":
    unittest.main()
