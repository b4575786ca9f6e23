#!/usr/bin/env python3
# pylint: disable=print-used
# (a command-line tool: its output is for the person who runs it)
"""The README's two commands: ``run`` (demo server) and ``test`` (full test run); ``pot`` regenerates
the translation template ``i18n/marketing_event_automation.pot``.

Both work from any clone folder name: the addon is exposed to Odoo as
``marketing_event_automation`` through a symlink in ``.odoo/addons`` (ignored
by git), next to the addons folders of the installed Odoo.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MODULE = "marketing_event_automation"
REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = REPO_ROOT / ".odoo"
HARNESS = REPO_ROOT / "tools" / "odoo_harness.py"
POT_PATH = REPO_ROOT / "i18n" / f"{MODULE}.pot"
# Tests of the Loyalty bridge: run only in a database where Loyalty is installed.
LOYALTY_TAG = "mea_loyalty"
OPTIONAL_APPS_TAG = "mea_optional_apps"
# Odoo apps the module works with but does not depend on, with the tag of
# their tests: (apps, tag). Their tests all run in ONE extra database where
# every one of these apps is installed; the main run never collects them (a
# skipped test counts as a failure here).
OPTIONAL_APPS = [
    (["loyalty"], LOYALTY_TAG),
    (["sale", "crm"], OPTIONAL_APPS_TAG),
]


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def odoo_addons_paths():
    """Addons folders of the installed Odoo, found from the importable package."""
    try:
        import odoo  # noqa: PLC0415
        import odoo.release  # noqa: PLC0415
    except ImportError:
        fail("python3 cannot import odoo: install Odoo 18.0 Community first (see README).")
    if odoo.release.version_info[0] != 18:
        fail(f"Odoo 18.0 is required, found {odoo.release.version}.")
    package_dir = Path(odoo.__file__).resolve().parent
    candidates = [package_dir / "addons", package_dir.parent / "addons"]
    return [str(path) for path in candidates if (path / "base").is_dir() or any(path.glob("*/__manifest__.py"))]


def module_addons_path():
    """A folder holding only a link named after the module, pointing at this clone."""
    addons_dir = WORK_DIR / "addons"
    addons_dir.mkdir(parents=True, exist_ok=True)
    link = addons_dir / MODULE
    if link.is_symlink() and link.resolve() != REPO_ROOT:
        link.unlink()
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    return str(addons_dir)


def addons_path_option():
    return "--addons-path=" + ",".join([module_addons_path(), *odoo_addons_paths()])


def install_requirements():
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REPO_ROOT / "requirements.txt")],
        check=True,
    )


def database_exists(db_name):
    result = subprocess.run(
        ["psql", "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = %s" % quote_literal(db_name)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() == "1"


def quote_literal(value):
    return "'" + value.replace("'", "''") + "'"


def module_installed(db_name):
    result = subprocess.run(
        [
            "psql",
            "-d",
            db_name,
            "-tAc",
            f"SELECT state FROM ir_module_module WHERE name = {quote_literal(MODULE)}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() == "installed"


def drop_database(db_name):
    subprocess.run(["dropdb", "--if-exists", "--force", db_name], check=False)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def odoo_command(*args):
    """Odoo's own launcher when the installation has one: multi-worker mode re-executes
    ``sys.argv[0]`` to start its gevent worker, which a ``python -c`` launch cannot do."""
    import odoo  # noqa: PLC0415

    launcher = Path(odoo.__file__).resolve().parent.parent / "odoo-bin"
    if launcher.is_file():
        return [sys.executable, str(launcher), *args]
    return [sys.executable, "-c", "import odoo.cli; odoo.cli.main()", *args]


def command_run(options):
    install_requirements()
    db_name = options.database
    addons = addons_path_option()
    action = "-u" if database_exists(db_name) and module_installed(db_name) else "-i"
    print(f"Preparing database {db_name!r} ({'update' if action == '-u' else 'install'} with demo data)...")
    subprocess.run(
        odoo_command("-d", db_name, addons, action, MODULE, "--stop-after-init", "--log-level=warn"),
        check=True,
    )
    print(
        "\n"
        f"  Odoo is starting on http://localhost:{options.port}/odoo  (database {db_name})\n"
        "  Log in with  admin / admin\n"
        "  The app is under the 'Marketing Automation' menu.\n"
    )
    os.execv(
        sys.executable,
        odoo_command("-d", db_name, addons, f"--http-port={options.port}", f"--db-filter=^{db_name}$"),
    )


def test_runs(options):
    """The test runs of the command: [(label, modules to install, test tags)].

    The full run is two runs: every test of the module in a database without
    any optional app, then the tests of the optional apps (the tags of
    OPTIONAL_APPS) in a second throwaway database where all of them are
    installed, so that the module is tested both without its optional
    partners and with them.
    """
    apps = [app for app_modules, _tag in OPTIONAL_APPS for app in app_modules]
    tags = [tag for _app_modules, tag in OPTIONAL_APPS]
    if options.test_tags is None:
        return [
            ("main", [MODULE], ",".join([f"/{MODULE}", *(f"-{tag}" for tag in tags)])),
            ("optional apps", [MODULE, *apps], ",".join(f"{tag}/{MODULE}" for tag in tags)),
        ]
    if options.with_optional_apps:
        return [("optional apps", [MODULE, *apps], options.test_tags)]
    return [("main", [MODULE], options.test_tags)]


def run_tests_once(options, modules, test_tags, demo=True):
    """Install ``modules`` in a throwaway database with --test-enable; return (report, exit code)."""
    db_name = f"mea_test_{uuid.uuid4().hex[:10]}"
    addons = addons_path_option()
    port = options.port or free_port()
    with tempfile.TemporaryDirectory(prefix="mea-test-") as tmp:
        report_path = Path(tmp) / "report.json"
        args = [
            "-d",
            db_name,
            addons,
            "-i",
            ",".join(modules),
            "--test-enable",
            f"--test-tags={test_tags}",
            "--stop-after-init",
            "--log-level=test",
            f"--http-port={port}",
            "--max-cron-threads=0",
        ]
        if not demo:
            args.append("--without-demo=all")
        try:
            completed = subprocess.run([sys.executable, str(HARNESS), str(report_path), "--", *args], check=False)
            report = json.loads(report_path.read_text()) if report_path.exists() else None
        finally:
            if not options.keep_db:
                drop_database(db_name)
    return report, completed.returncode


def merge_reports(runs):
    """One report for several runs [(label, report, exit code)]: counts summed, a missing report is a failure."""
    merged = {"exit_code": 0, "tests_run": 0, "failures": 0, "errors": 0, "skipped": 0, "severe_log_records": []}
    returncode = 0
    for label, report, code in runs:
        returncode = returncode or code
        if report is None:
            merged["severe_log_records"].append(f"the {label} run produced no report (exit code {code})")
            continue
        for key in ("tests_run", "failures", "errors", "skipped"):
            merged[key] += report[key]
        merged["exit_code"] = merged["exit_code"] or report.get("exit_code", 0)
        merged["severe_log_records"].extend(report["severe_log_records"])
        if not report["tests_run"]:
            merged["severe_log_records"].append(f"no test ran in the {label} run")
    return merged, returncode


def command_test(options):
    install_requirements()
    started = time.time()
    results = []
    for label, modules, test_tags in test_runs(options):
        print(f"Test run {label}: installing {', '.join(modules)}, tests {test_tags}")
        # The optional apps' tests need only their own fixtures: no demo data, a shorter install.
        report, code = run_tests_once(options, modules, test_tags, demo=label == "main")
        results.append((label, report, code))
    if len(results) == 1:
        return summarize(results[0][1], results[0][2], time.time() - started)
    merged, returncode = merge_reports(results)
    return summarize(merged, returncode, time.time() - started)


def command_pot(options):
    """Export the module's terms with Odoo's exporter, from a throwaway database.

    The database has the demo data, as the test databases do (test_translations
    compares their terms with the file). Odoo's exporter follows symbolic links
    when it scans the code: it reads a copy of the addon without ``.odoo``,
    whose link back to the clone would make it scan the clone again and again.
    """
    install_requirements()
    db_name = f"mea_pot_{uuid.uuid4().hex[:10]}"
    POT_PATH.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mea-pot-") as tmp:
        shutil.copytree(
            REPO_ROOT, Path(tmp) / MODULE, ignore=shutil.ignore_patterns(".odoo", ".git", "docs", "node_modules")
        )
        addons = "--addons-path=" + ",".join([tmp, *odoo_addons_paths()])
        try:
            for args in (("-i", MODULE), (f"--i18n-export={POT_PATH}", f"--modules={MODULE}")):
                subprocess.run(
                    odoo_command("-d", db_name, addons, *args, "--stop-after-init", "--log-level=warn"), check=True
                )
        finally:
            drop_database(db_name)
    print(f"Wrote {POT_PATH.relative_to(REPO_ROOT)}")
    return 0


def summarize(report, returncode, elapsed):
    """Turn the harness report into the closing line; return the exit code."""
    problems = []
    if report is None:
        problems.append(f"the Odoo run produced no report (exit code {returncode})")
        report = {"tests_run": 0, "failures": 0, "errors": 0, "skipped": 0, "severe_log_records": []}
    failed = report["failures"] + report["errors"]
    # A skipped test is a failure: Odoo skips browser tours silently without
    # Chromium or websocket-client, and none of this module's tests may skip.
    failed += report["skipped"]
    passed = report["tests_run"] - failed
    if report["tests_run"] == 0:
        problems.append("no test ran")
    if report["skipped"]:
        problems.append(f"{report['skipped']} test(s) skipped (a tour without a browser counts as failed)")
    if report["severe_log_records"]:
        problems.append(f"{len(report['severe_log_records'])} ERROR/CRITICAL log record(s):")
        problems.extend("    " + line for line in report["severe_log_records"][:30])
    if report.get("exit_code") and not failed:
        problems.append(f"Odoo exited with code {report['exit_code']}")
    if returncode and not problems and not failed:
        problems.append(f"the harness exited with code {returncode}")
    print()
    print(f"Test run finished in {elapsed:.0f}s: {report['tests_run']} tests run.")
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems and not failed:
        failed = 1  # the run itself failed (an ERROR logged, no test, a crash): never print "0 failed" then
    print(f"{max(passed, 0)} passed, {failed} failed")
    return 1 if (problems or failed) else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="create or update the demo database and serve it")
    run.add_argument("--database", default=os.environ.get("MEA_DEMO_DB", "mea_demo"))
    run.add_argument("--port", type=int, default=8069)
    test = commands.add_parser("test", help="install the module in a throwaway database and run its tests")
    test.add_argument(
        "--test-tags",
        default=None,
        help="Odoo test tags of a single run (default: every test, then those of the optional apps with them)",
    )
    test.add_argument(
        "--with-optional-apps",
        "--with-loyalty",
        dest="with_optional_apps",
        action="store_true",
        help="install the optional apps too (Loyalty, Sales, CRM), for their tests given with --test-tags, e.g. "
        f"--with-optional-apps --test-tags {OPTIONAL_APPS_TAG}/{MODULE}",
    )
    test.add_argument("--port", type=int, default=None, help="HTTP port for HttpCase tests (default: a free one)")
    test.add_argument("--keep-db", action="store_true", help="keep the test database for inspection")
    commands.add_parser("pot", help="regenerate i18n/marketing_event_automation.pot with Odoo's exporter")
    options = parser.parse_args()
    if options.command == "pot":
        return command_pot(options)
    if options.command == "run":
        command_run(options)
        return 0
    return command_test(options)


if __name__ == "__main__":
    sys.exit(main())
