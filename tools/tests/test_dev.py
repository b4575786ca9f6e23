"""The test command's verdict: red on a failure, a skip, an ERROR log or no test at all."""

import contextlib
import io
import unittest

from tools.dev import EXTRA_RUNS
from tools.dev import merge_reports
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


class TestMergeReports(unittest.TestCase):
    def test_counts_of_the_main_and_the_extra_runs_add_up(self):
        merged, code = merge_reports(
            [
                (report(tests_run=10, failures=1, exit_code=1), 1),
                (report(tests_run=4, skipped=1, severe_log_records=["ERROR x: y"]), 0),
            ]
        )
        self.assertEqual(code, 1)
        self.assertEqual((merged["tests_run"], merged["failures"], merged["skipped"]), (14, 1, 1))
        code, lines = verdict(merged, code)
        self.assertEqual(lines[-1], "12 passed, 2 failed")

    def test_a_run_without_report_fails_the_whole(self):
        merged, code = merge_reports([(report(), 0), (None, 255)])
        self.assertIsNone(merged)
        self.assertEqual(verdict(merged, code)[1][-1], "0 passed, 1 failed")

    def test_every_extra_run_names_its_apps_and_a_tag(self):
        for extra in EXTRA_RUNS:
            self.assertTrue(extra["modules"])
            self.assertTrue(extra["tags"])
            for tag in extra["tags"]:
                self.assertRegex(tag, r"^\w+$")
