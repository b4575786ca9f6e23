"""The test command's verdict: red on a failure, a skip, an ERROR log or no test at all."""

import argparse
import contextlib
import io
import unittest

from tools.dev import merge_reports
from tools.dev import summarize
from tools.dev import test_runs


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


class TestRuns(unittest.TestCase):
    def options(self, test_tags=None, with_optional_apps=False):
        return argparse.Namespace(test_tags=test_tags, with_optional_apps=with_optional_apps)

    def test_full_run_is_main_then_one_database_with_every_optional_app(self):
        runs = test_runs(self.options())
        self.assertEqual(
            runs,
            [
                (
                    "main",
                    ["marketing_event_automation"],
                    "/marketing_event_automation,-mea_loyalty,-mea_optional_apps",
                ),
                (
                    "optional apps",
                    ["marketing_event_automation", "loyalty", "sale", "crm"],
                    "mea_loyalty/marketing_event_automation,mea_optional_apps/marketing_event_automation",
                ),
            ],
        )

    def test_chosen_tags_are_one_run(self):
        tags = "/marketing_event_automation:TestEventApi"
        self.assertEqual(test_runs(self.options(tags)), [("main", ["marketing_event_automation"], tags)])
        runs = test_runs(self.options(tags, with_optional_apps=True))
        self.assertEqual(runs, [("optional apps", ["marketing_event_automation", "loyalty", "sale", "crm"], tags)])

    def test_both_runs_are_summed_in_the_closing_line(self):
        merged, returncode = merge_reports(
            [("main", report(tests_run=100), 0), ("optional apps", report(tests_run=2, failures=1, exit_code=1), 1)]
        )
        code, lines = verdict(merged, returncode)
        self.assertEqual((code, lines[-1]), (1, "101 passed, 1 failed"))

    def test_green_runs_are_green(self):
        merged, returncode = merge_reports(
            [("main", report(tests_run=100), 0), ("optional apps", report(tests_run=2), 0)]
        )
        code, lines = verdict(merged, returncode)
        self.assertEqual((code, lines[-1]), (0, "102 passed, 0 failed"))

    def test_an_optional_apps_run_without_report_or_tests_is_red(self):
        for extra in (None, report(tests_run=0)):
            with self.subTest(extra=extra):
                merged, returncode = merge_reports(
                    [("main", report(), 0), ("optional apps", extra, 255 if extra is None else 0)]
                )
                code, lines = verdict(merged, returncode)
                self.assertEqual(code, 1)
                self.assertTrue(any("optional apps run" in line for line in lines), lines)
                self.assertTrue(lines[-1].endswith("1 failed"), lines)


if __name__ == "__main__":
    unittest.main()
