#!/usr/bin/env python3
# pylint: disable=print-used
# (a command-line tool: its output is for the person who runs it)
"""Fuzz both event APIs from their OpenAPI document with schemathesis.

    python3 tools/fuzz_api.py [--max-examples 300] [--seed 1] [--workers 2]
    python3 tools/fuzz_api.py --url http://localhost:8069 --write-key mea_..._...

Without ``--url`` it installs the module (no demo data) in a throwaway
database, creates an API source without rate limit and its write key, a few
event types and contacts, and starts Odoo on a free port. It then runs
schemathesis (installed on first use into ``.odoo/fuzz-venv``, apart from
Odoo's own Python packages) against ``/automation/v1/openapi.json``: every
operation, positive and negative generated requests, with the write key in
the ``Authorization`` header. Checks: no 5xx, every status is documented, every
answer's content type, headers and body follow the document. Prints the number
of requests sent and of failures; exits 1 on any failure. The database is
dropped at the end unless ``--keep-db`` is given.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.dev import WORK_DIR
from tools.ingest_client import setup_source
from tools.odoo_process import Workspace

VENV = WORK_DIR / "fuzz-venv"
HOOKS = Path(__file__).resolve().parent / "fuzz_hooks.py"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)

# On top of the ingestion tools' source, types and contacts: a schema to violate and a contact to address.
FUZZ_SETUP = """
with registry.cursor() as cr:
    env = api.Environment(cr, SUPERUSER_ID, {"tracking_disable": True})
    env["marketing.event.type"].search([("key", "=", "cart_abandoned")]).write({
        "validate_params": True,
        "params_schema": '{"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}',
    })
    env["res.partner"].create([{"name": "Alice", "email": "alice@example.com", "marketing_external_id": "C-1001"}])
    cr.commit()
"""


def schemathesis_binary():
    """schemathesis in its own virtualenv: its dependencies must not replace Odoo's."""
    binary = VENV / "bin" / "schemathesis"
    if not binary.exists():
        print(f"Installing schemathesis into {VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "schemathesis"], check=True)
    return binary


def count_requests(ndjson_path):
    """Requests sent and failures found, read from schemathesis' event stream."""
    sent, failures = 0, []
    for line in ndjson_path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        for kind, payload in event.items():
            if kind == "ScenarioFinished":
                for interaction in (payload.get("recorder") or {}).get("interactions", {}).values():
                    if interaction.get("response") is not None:
                        sent += 1
                for check_list in (payload.get("recorder") or {}).get("checks", {}).values():
                    failures += [check for check in check_list if check.get("status") == "failure"]
    return sent, failures


def run_fuzzer(base_url, write_key, options, report_dir):
    report_dir.mkdir(parents=True, exist_ok=True)
    ndjson_path = report_dir / "events.ndjson"
    command = [
        str(schemathesis_binary()),
        "run",
        f"{base_url}/automation/v1/openapi.json",
        "--url",
        base_url,
        "--header",
        f"Authorization: Bearer {write_key}",
        "--checks",
        ",".join(CHECKS),
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(options.max_examples),
        "--seed",
        str(options.seed),
        "--workers",
        str(options.workers),
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--continue-on-failure",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(ndjson_path),
    ]
    print("Running: " + " ".join(command).replace(write_key, "<write key>"), flush=True)
    # In .odoo: schemathesis keeps its cache in the working directory.
    completed = subprocess.run(command, check=False, cwd=WORK_DIR, env=dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS)))
    sent, failures = count_requests(ndjson_path)
    return completed.returncode, sent, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="fuzz this running server instead of a throwaway one")
    parser.add_argument("--write-key", help="write key of a source of --url (without rate limit)")
    parser.add_argument("--max-examples", type=int, default=300, help="generated test cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-db", action="store_true")
    options = parser.parse_args()
    if bool(options.url) != bool(options.write_key):
        parser.error("--url and --write-key go together")

    report_dir = WORK_DIR / "fuzz-report"
    if options.url:
        returncode, sent, failures = run_fuzzer(options.url.rstrip("/"), options.write_key, options, report_dir)
    else:
        with Workspace("fuzz", keep_db=options.keep_db) as workspace:
            write_key, _source_id = setup_source(workspace, known=0, dispatch=True)
            workspace.run_script(FUZZ_SETUP)
            server = workspace.server(name="fuzz", log_level="warn").start()
            print(f"Odoo's log: {server.log_path}", flush=True)
            returncode, sent, failures = run_fuzzer(server.base_url, write_key, options, report_dir)
    print()
    print(f"FUZZ: {sent} requests sent, {len(failures)} failed checks (report: {report_dir})")
    for failure in failures[:20]:
        print(f"  - {failure.get('name')}: {json.dumps(failure.get('failure_info') or {}, default=str)[:300]}")
    return 1 if failures or returncode else 0


if __name__ == "__main__":
    sys.exit(main())
