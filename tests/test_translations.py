import polib

from odoo.tests import TransactionCase
from odoo.tests import tagged
from odoo.tools import file_path
from odoo.tools.translate import TranslationModuleReader

MODULE = "marketing_event_automation"


@tagged("post_install", "-at_install")
class TestTranslationTemplate(TransactionCase):
    def test_pot_file_holds_every_term_of_the_module(self):
        """The terms Odoo's exporter finds are those of i18n/<module>.pot: regenerate it with tools/dev.py pot."""
        exported = {row[4] for row in TranslationModuleReader(self.env.cr, modules=[MODULE])}
        in_file = {entry.msgid for entry in polib.pofile(file_path(f"{MODULE}/i18n/{MODULE}.pot"))}
        self.assertTrue(exported)
        self.assertEqual(sorted(exported - in_file), [], "terms missing from the .pot: run python3 tools/dev.py pot")
        self.assertEqual(sorted(in_file - exported), [], "terms no longer used: run python3 tools/dev.py pot")
