# pylint: disable=print-used
"""The launcher and setup every benchmark, fuzz, fault and load tool of ``tools/`` shares.

- a throwaway database with the module installed (no demo data), or an existing one,
- Python run inside that database's registry (setup, checks), in a subprocess,
- Odoo servers as subprocesses in their own process group, so that a tool can
  SIGKILL the whole server (master, workers, cron threads) like a power cut,
  restart it, and measure its memory (RSS of the whole process tree),
- PostgreSQL checks: open transactions and locks left by killed servers.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg2
import requests

from tools.dev import MODULE
from tools.dev import addons_path_option
from tools.dev import drop_database
from tools.dev import free_port
from tools.dev import odoo_command

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT_PREAMBLE = """
import json
import sys
sys.path.insert(0, {repo!r})
from odoo import api, SUPERUSER_ID
from odoo.modules.registry import Registry
from odoo.tools import config
config.parse_config(["-d", {db!r}, {addons!r}, "--log-level=warn"])
registry = Registry({db!r})

def emit_result(value):
    print("RESULT=" + json.dumps(value))
"""


def new_database_name(prefix):
    return f"mea_{prefix}_{uuid.uuid4().hex[:8]}"


def create_database(db_name, addons, module=MODULE):
    """A database with ``module`` installed and no demo data."""
    print(f"Creating database {db_name} with {module} (a minute or two)...", flush=True)
    subprocess.run(
        odoo_command(
            "-d", db_name, addons, "-i", module, "--without-demo=all", "--stop-after-init", "--log-level=warn"
        ),
        check=True,
    )


def script(db_name, addons, code):
    """The Python source of a script run in the database's registry (see :func:`run_script`)."""
    return SCRIPT_PREAMBLE.format(repo=str(REPO_ROOT), db=db_name, addons=addons) + code


def run_script(db_name, addons, code):
    """Run ``code`` in a fresh Python process with ``registry`` of the database; return what it passed to
    ``emit_result(value)`` (JSON), or raise with its output when it fails."""
    completed = subprocess.run(
        [sys.executable, "-c", script(db_name, addons, code)], capture_output=True, text=True, check=False
    )
    if completed.returncode:
        raise RuntimeError(
            f"script failed ({completed.returncode}):\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
        )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT="):
            return json.loads(line.split("=", 1)[1])
    return None


def start_script(db_name, addons, code):
    """Like :func:`run_script`, without waiting: the process (stdout piped, text), in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-c", script(db_name, addons, code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def script_result(process, timeout=None):
    """Wait for a :func:`start_script` process; return its ``emit_result`` value."""
    stdout, stderr = process.communicate(timeout=timeout)
    if process.returncode:
        raise RuntimeError(f"script failed ({process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
    for line in stdout.splitlines():
        if line.startswith("RESULT="):
            return json.loads(line.split("=", 1)[1])
    return None


def connect(db_name):
    """An autocommit connection for the tool's own checks."""
    connection = psycopg2.connect(dbname=db_name)
    connection.autocommit = True
    return connection


def query(db_name, sql, params=None):
    with connect(db_name) as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
    connection.close()
    return rows


def trigger_cron(db_name, xmlid):
    """What ``ir.cron._trigger()`` does, from outside Odoo: a trigger due now, and a NOTIFY to wake the cron workers."""
    module, name = xmlid.split(".", 1)
    with connect(db_name) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT res_id FROM ir_model_data WHERE module = %s AND name = %s AND model = 'ir.cron'", [module, name]
        )
        [cron_id] = cursor.fetchone()
        cursor.execute(
            "INSERT INTO ir_cron_trigger (cron_id, call_at, create_uid, create_date, write_uid, write_date)"
            " VALUES (%s, now() at time zone 'utc', 1, now() at time zone 'utc', 1, now() at time zone 'utc')",
            [cron_id],
        )
        cursor.execute("NOTIFY cron_trigger, %s", [db_name])
    connection.close()
    return cron_id


class OdooServer:
    """One Odoo server on the database, in its own session (process group)."""

    def __init__(
        self,
        db_name,
        addons,
        *,
        workers=0,
        cron_threads=0,
        name="odoo",
        log_dir=None,
        extra=(),
        log_level="info",
        db_filter=True,
    ):
        self.db_name = db_name
        self.log_level = log_level
        # Without --db-filter, -d alone makes Odoo serve that database without
        # listing the server's databases on every request (a production setup).
        self.db_filter = db_filter
        self.addons = addons
        self.workers = workers
        self.cron_threads = cron_threads
        self.name = name
        self.extra = list(extra)
        self.port = free_port()
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="mea-faults-"))
        self.log_path = self.log_dir / f"{name}.log"
        self.process = None
        self.starts = 0
        self.kills = 0
        self.killed_pids = []

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait=True):
        command = odoo_command(
            "-d",
            self.db_name,
            self.addons,
            f"--http-port={self.port}",
            f"--workers={self.workers}",
            f"--max-cron-threads={self.cron_threads}",
            *([f"--db-filter=^{self.db_name}$"] if self.db_filter else []),
            f"--log-level={self.log_level}",
            f"--logfile={self.log_path}",
            "--limit-time-real=600",
            "--limit-time-cpu=600",
            *self.extra,
        )
        # A cron that stops with work left notifies the cron workers at once
        # instead of waiting for their next one-minute poll.
        env = dict(os.environ, ODOO_NOTIFY_CRON_CHANGES="1")
        # Odoo's log goes to --logfile; what the processes print elsewhere (a
        # worker that cannot start) to a file next to it.
        with open(self.log_dir / f"{self.name}.stderr.log", "a", encoding="utf-8") as stderr:
            self.process = subprocess.Popen(
                command, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=180):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.base_url}/web/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer within {timeout}s; see {self.log_path}")

    def pids(self):
        """The server's processes: the main one and its descendants (prefork workers, gevent)."""
        if not self.process or self.process.poll() is not None:
            return []
        try:
            main = psutil.Process(self.process.pid)
            return [main.pid, *(child.pid for child in main.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def rss(self):
        """Resident memory of the whole process tree, in bytes."""
        return sum(self.rss_by_role().values())

    def rss_by_role(self):
        """Resident memory in bytes of the server's processes: ``{"main": .., "workers": .., "gevent": ..}``.

        The gevent (websocket) worker is apart: when it cannot start (a missing
        optional package) the master respawns it again and again, and its
        coming and going would hide the trend of the processes that serve.
        """
        roles = {"main": 0, "workers": 0, "gevent": 0}
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                rss = process.memory_info().rss
                if pid == self.process.pid:
                    roles["main"] += rss
                elif "gevent" in process.cmdline()[2:3]:
                    roles["gevent"] += rss
                else:
                    roles["workers"] += rss
        return roles

    def kill(self):
        """SIGKILL the whole process group, like a crash: no cleanup, open transactions cut."""
        pids = self.pids()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.killed_pids.extend(pids)
        return pids

    def stop(self):
        if not self.process or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def log_lines(self, level):
        if not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text(errors="replace").splitlines() if f" {level} " in line]


def backends_of(db_name, pids):
    """PostgreSQL backends still open for these (killed) Odoo processes."""
    if not pids:
        return []
    names = [f"odoo-{pid}" for pid in pids]
    return query(
        db_name,
        "SELECT pid, application_name, state FROM pg_stat_activity WHERE application_name = ANY(%s)",
        [names],
    )


def wait_backends_gone(db_name, pids, timeout=60):
    """Wait until PostgreSQL has ended the sessions of killed processes (their transactions roll back)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not backends_of(db_name, pids):
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"PostgreSQL sessions of killed processes still open: {backends_of(db_name, pids)}")


def lingering_locks(db_name):
    """Locks on this database held by any other session than the tool's own, and transactions left open."""
    locks = query(
        db_name,
        """
        SELECT l.locktype, l.mode, l.relation::regclass::text, a.application_name, a.state
          FROM pg_locks l
          JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE a.datname = current_database() AND l.pid <> pg_backend_pid()
           AND l.locktype IN ('relation', 'tuple', 'transactionid', 'advisory')
        """,
    )
    open_transactions = query(
        db_name,
        """
        SELECT pid, application_name, state, now() - xact_start
          FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
        """,
    )
    return locks, open_transactions


class Workspace:
    """A database (created or dropped by the tool) and its servers, cleaned up on exit."""

    def __init__(self, prefix, keep_db=False, database=None):
        self.addons = addons_path_option()
        # An existing database is used as it is, and kept.
        self.existing = bool(database)
        self.db_name = database or new_database_name(prefix)
        self.keep_db = keep_db or self.existing
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"mea-{prefix}-"))
        self.servers = []

    def __enter__(self):
        if not self.existing:
            create_database(self.db_name, self.addons)
        return self

    def server(self, **options):
        server = OdooServer(self.db_name, self.addons, log_dir=self.log_dir, **options)
        self.servers.append(server)
        return server

    def run_script(self, code):
        return run_script(self.db_name, self.addons, code)

    def __exit__(self, *exc_info):
        for server in self.servers:
            server.stop()
        if self.keep_db:
            print(f"Kept database {self.db_name}; server logs in {self.log_dir}")
        else:
            drop_database(self.db_name)
        return False


def print_table(title, rows):
    print(f"\n{title}")
    width = max(len(label) for label, _value in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def verdict(failures, success, server_errors=()):
    """Print the server log's first ERROR lines, each failure, or ``success``; return the exit code."""
    for line in list(server_errors)[:10]:
        print("  server log:", line[:300])
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print(f"OK: {success}")
    return 1 if failures else 0
