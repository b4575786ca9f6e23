import base64
import binascii

from odoo import fields
from odoo import models
from odoo.exceptions import UserError


class MarketingScenarioImportWizard(models.TransientModel):
    """Import a scenario exported from this or another database as a JSON document."""

    _name = "marketing.scenario.import.wizard"
    _description = "Import a Scenario"

    data_file = fields.Binary(string="File", attachment=False, help="A scenario exported as JSON (Export).")
    filename = fields.Char()

    def action_import(self):
        self.ensure_one()
        if not self.data_file:
            raise UserError(self.env._("File: choose the JSON file of an exported scenario."))
        try:
            raw = base64.b64decode(self.data_file, validate=True)
        except (binascii.Error, ValueError):
            raise UserError(self.env._("File: the upload could not be read.")) from None
        scenario = self.env["marketing.scenario"]._transfer_import_bytes(raw)
        return scenario._action_open()
