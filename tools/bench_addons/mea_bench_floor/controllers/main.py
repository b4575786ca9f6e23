"""Odoo's own floor for one JSON request: the same kind of route as the module's API, doing no work.

POST, ``auth="public"``, a JSON body read and decoded, a JSON answer, the
database chosen the same way (``--db-filter``). Only the benchmark's server
has this addon on its addons path; the module never depends on it.
"""

import json

from odoo import http
from odoo.http import request


class BenchFloor(http.Controller):
    @http.route("/mea_bench_floor/echo", type="http", auth="public", methods=["POST"], csrf=False, save_session=False)
    def echo(self, **_kwargs):
        body = json.loads(request.httprequest.get_data() or b"{}")
        return request.make_json_response(
            {"accepted": 1, "results": [{"status": "accepted", "event_id": body.get("event_id")}]}, status=202
        )
