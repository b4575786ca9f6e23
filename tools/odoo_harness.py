"""Run the Odoo server in this process and write a machine-readable test report.

``python3 tools/odoo_harness.py REPORT.json -- <odoo server options>``

Parsing Odoo's log to count tests is fragile (post-install tests print no
summary line), so this harness runs ``odoo.cli.server.main`` itself and reads
the registry's own ``OdooTestResult`` once the server has stopped. It also
counts every ERROR or CRITICAL log record, because a module can log an error
during install or in a cron without any test failing.
"""

import json
import logging
import sys


class _SevereRecordCounter(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call is itself worth reporting
            message = str(record.msg)
        lines = [line for line in message.splitlines() if line.strip()] or [""]
        summary = lines[0][:300]
        if len(lines) > 1:
            # A failed test logs its traceback: its last line says what was
            # asserted, which is what a CI log cut to its tail must still show.
            summary += " | " + lines[-1].strip()[:500]
        self.records.append(f"{record.levelname} {record.name}: {summary}")


def main(argv):
    report_path, odoo_args = argv[0], argv[2:] if argv[1:2] == ["--"] else argv[1:]

    import odoo  # noqa: PLC0415 - Odoo must only be imported once the harness is running
    from odoo.cli.server import main as server_main  # noqa: PLC0415
    from odoo.modules.registry import Registry  # noqa: PLC0415

    counter = _SevereRecordCounter()
    logging.getLogger().addHandler(counter)
    exit_code = 0
    try:
        server_main(odoo_args)
    except SystemExit as stop:
        exit_code = stop.code if isinstance(stop.code, int) else 1

    db_name = odoo.tools.config["db_name"]
    registry = Registry.registries.get(db_name) if db_name else None
    assertion_report = registry and registry._assertion_report
    report = {
        "exit_code": exit_code,
        "tests_run": assertion_report.testsRun if assertion_report else 0,
        "failures": assertion_report.failures_count if assertion_report else 0,
        "errors": assertion_report.errors_count if assertion_report else 0,
        "skipped": assertion_report.skipped if assertion_report else 0,
        "severe_log_records": counter.records,
        "registry_loaded": registry is not None,
    }
    with open(report_path, "w", encoding="utf-8") as report_file:
        json.dump(report, report_file, indent=2)
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
