from odoo import models
from odoo.http import request

# Where a request remembers that its body, labelled a form, is JSON.
FORM_LABELLED_ENVIRON_KEY = "marketing_event_automation.form_labelled"


class IrHttp(models.AbstractModel):
    _inherit = "ir.http"

    @classmethod
    def _pre_dispatch(cls, rule, args):
        # RudderStack's Node library sends gzipped JSON labelled
        # application/x-www-form-urlencoded. Odoo parses a form before the
        # controller runs, and the parse would consume the body: on the routes
        # that ask for it (``marketing_json_body``: the largest body they
        # take), the body is read first and kept, for the controller to read
        # as JSON with its size and gzip limits. A larger or chunked body is
        # left alone: the controller refuses it from its headers.
        httprequest = request.httprequest
        max_size = rule.endpoint.routing.get("marketing_json_body")
        if (
            max_size
            and httprequest.mimetype == "application/x-www-form-urlencoded"
            and httprequest.content_length is not None
            and httprequest.content_length <= max_size
        ):
            httprequest.get_data()
            httprequest.environ[FORM_LABELLED_ENVIRON_KEY] = True
        return super()._pre_dispatch(rule, args)
