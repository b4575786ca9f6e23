#!/usr/bin/env python3
# pylint: disable=print-used
# (a command-line tool: its output is for the person who runs it)
"""Screenshots of the running module for the README, taken in headless Chromium.

Start the demo server first (``make run``), then::

    python3 tools/screenshots.py [--url http://localhost:8069] [--database mea_demo]

It logs in through Odoo's JSON-RPC, hands the session cookie to Chromium over the
DevTools protocol and saves one PNG per screen in ``docs/screenshots/``.
"""

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import websocket

REPO_ROOT = Path(__file__).resolve().parent.parent
MODULE = "marketing_event_automation"


class Odoo:
    """A JSON-RPC session on the server being photographed."""

    def __init__(self, url, database, login, password):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        answer = self._call("/web/session/authenticate", {"db": database, "login": login, "password": password})
        if not answer.get("uid"):
            sys.exit(f"cannot log in as {login} on {database}")

    def _call(self, path, params):
        response = self.session.post(
            self.url + path, json={"jsonrpc": "2.0", "method": "call", "params": params}, timeout=60
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("error"):
            sys.exit(f"{path}: {payload['error']['data']['message']}")
        return payload["result"]

    def search_read(self, model, domain, fields, order=None, limit=1):
        kwargs = {"domain": domain, "fields": fields, "limit": limit}
        if order:
            kwargs["order"] = order
        return self._call(
            "/web/dataset/call_kw", {"model": model, "method": "search_read", "args": [], "kwargs": kwargs}
        )

    @property
    def session_id(self):
        return self.session.cookies.get("session_id")


class Chromium:
    """Headless Chromium driven through the DevTools protocol."""

    def __init__(self, width, height):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if not binary:
            sys.exit("chromium is not on the PATH")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--window-size={width},{height}",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        targets = self._wait_for_targets(port)
        page = next(target for target in targets if target["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.message_id = 0
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    @staticmethod
    def _wait_for_targets(port):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                return requests.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
            except requests.RequestException:
                time.sleep(0.3)
        sys.exit("chromium did not open its DevTools port")

    def send(self, method, **params):
        self.message_id += 1
        self.socket.send(json.dumps({"id": self.message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, selector, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"!!document.querySelector({json.dumps(selector)})"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"{selector} did not appear")

    def capture(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.profile.cleanup()


def screens(odoo):
    """(file name, path, selector to wait for, script run before the capture) of each screen."""
    scenario = odoo.search_read(
        "marketing.scenario", [("state", "=", "running")], ["id"], order="id"
    ) or odoo.search_read("marketing.scenario", [], ["id"])
    event_type_action = f"action-{MODULE}.action_marketing_event_type"
    scenario_action = f"action-{MODULE}.action_marketing_scenario"
    contact = odoo.search_read(
        "res.partner", [("engagement_score_set", "=", True)], ["id"], order="engagement_score desc, id"
    )
    result = [
        ("scenarios_kanban.png", f"/odoo/{scenario_action}", ".o_kanban_view .o_kanban_record", ""),
        ("event_types_list.png", f"/odoo/{event_type_action}", ".o_list_view .o_data_row", ""),
    ]
    if scenario:
        result.insert(
            0,
            (
                "scenario_canvas.png",
                f"/odoo/{scenario_action}/{scenario[0]['id']}",
                ".o_mea_flow .o_mea_flow_node",
                "document.querySelector('.o_mea_flow').scrollIntoView()",
            ),
        )
    if contact:
        result.append(
            ("contact_score.png", f"/odoo/contacts/{contact[0]['id']}", ".o_form_view .o_mea_engagement_score", "")
        )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8069")
    parser.add_argument("--database", default="mea_demo")
    parser.add_argument("--login", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "screenshots"))
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--height", type=int, default=900)
    options = parser.parse_args()

    odoo = Odoo(options.url, options.database, options.login, options.password)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    browser = Chromium(options.width, options.height)
    try:
        browser.send(
            "Network.setCookie", name="session_id", value=odoo.session_id, url=odoo.url, path="/", httpOnly=True
        )
        for file_name, path, selector, before in screens(odoo):
            browser.send("Page.navigate", url=odoo.url + path)
            try:
                browser.wait_for(selector)
            except RuntimeError:
                browser.capture(output / f"failed_{file_name}")
                raise
            if before:
                browser.evaluate(before)
            # Let the web client finish its last renders and fonts load.
            time.sleep(1.5)
            browser.capture(output / file_name)
            print(f"{output / file_name}")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
