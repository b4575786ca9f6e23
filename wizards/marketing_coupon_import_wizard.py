import base64
import re

from odoo import fields
from odoo import models
from odoo.exceptions import UserError

from ..models.marketing_coupon_list import CODE_MAX_LENGTH
from ..utils.spreadsheet import csv_reader

CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
CODE_HEADERS = ("code", "coupon", "coupon code", "codes")
MAX_IMPORT_BYTES = 20 * 1024 * 1024


class MarketingCouponImportWizard(models.TransientModel):
    _name = "marketing.coupon.import.wizard"
    _description = "Import Coupon Codes"

    list_id = fields.Many2one("marketing.coupon.list", string="Coupon List", required=True, ondelete="cascade")
    import_file = fields.Binary(string="CSV File", help='One code per row; a first row "code" names the column.')
    import_filename = fields.Char()
    pasted_codes = fields.Text(string="Or Paste Codes", help="One code per line (commas and semicolons also split).")
    state = fields.Selection([("draft", "Draft"), ("done", "Done")], default="draft", required=True)
    imported_count = fields.Integer(string="Imported", readonly=True)
    rejected_count = fields.Integer(string="Rejected", readonly=True)
    rejected_rows = fields.Text(readonly=True)

    def _rows(self):
        """(where, text) of every code given, in order: a CSV file's rows and the pasted lines."""
        rows = []
        if self.import_file:
            raw = base64.b64decode(self.import_file)
            if len(raw) > MAX_IMPORT_BYTES:
                raise UserError(self.env._("CSV File: larger than 20 MB; split it."))
            try:
                table = list(csv_reader(raw))
            except ValueError as error:
                raise UserError(self.env._("CSV File: %(error)s.", error=error)) from error
            column, start = 0, 0
            if table:
                header = [cell.strip().lower() for cell in table[0]]
                named = next((index for index, name in enumerate(header) if name in CODE_HEADERS), None)
                if named is not None:
                    column, start = named, 1
            for number, row in enumerate(table[start:], start=start + 1):
                if not any(cell.strip() for cell in row):
                    continue
                cell = row[column] if column < len(row) else ""
                rows.append((self.env._("file row %(row)s", row=number), cell))
        for number, line in enumerate((self.pasted_codes or "").splitlines(), start=1):
            for part in re.split(r"[,;]", line):
                if part.strip():
                    rows.append((self.env._("pasted line %(line)s", line=number), part))
        return rows

    def _reason(self, code):
        if not code:
            return self.env._("the code is empty")
        if len(code) > CODE_MAX_LENGTH:
            return self.env._("the code is longer than %(length)s characters", length=CODE_MAX_LENGTH)
        if not CODE_PATTERN.fullmatch(code):
            return self.env._("only letters, digits, '-' and '_' are allowed, starting with a letter or digit")
        return None

    def action_import(self):
        self.ensure_one()
        coupon_list = self.list_id
        if coupon_list.source != "codes":
            raise UserError(self.env._("%(list)s takes its codes from a loyalty program.", list=coupon_list.name))
        rows = self._rows()
        if not rows:
            raise UserError(self.env._("Codes: give a CSV file or paste codes."))
        candidates, rejected, seen = {}, [], set()
        for where, text in rows:
            code = text.strip()
            reason = self._reason(code)
            if reason is None and code in seen:
                reason = self.env._("the code %(code)s is given twice", code=code)
            if reason:
                rejected.append(self.env._("%(where)s: %(reason)s", where=where, reason=reason))
                continue
            seen.add(code)
            candidates[code] = where
        existing = set(
            self.env["marketing.coupon"]
            .search_fetch([("list_id", "=", coupon_list.id), ("code", "in", list(candidates))], ["code"])
            .mapped("code")
        )
        for code in existing:
            rejected.append(
                self.env._("%(where)s: the code %(code)s is already in the list", where=candidates.pop(code), code=code)
            )
        imported = coupon_list._insert_codes(list(candidates))
        coupon_list._check_low_stock()
        self.write(
            {
                "state": "done",
                "imported_count": imported,
                "rejected_count": len(rejected),
                "rejected_rows": "\n".join(rejected),
            }
        )
        return {
            "type": "ir.actions.act_window",
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Import Codes"),
        }
