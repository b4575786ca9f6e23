from odoo import models


class MailingContactImport(models.TransientModel):
    _inherit = "mailing.contact.import"

    def action_import(self):
        """Log the pasted contacts created in the wizard's lists as one contacts_imported event."""
        Contact = self.env["mailing.contact"]
        # The wizard reports its new contacts only inside a client action:
        # find them as the contacts created by this transaction after the last
        # existing one.
        last_contact = Contact.with_context(active_test=False).search([], order="id desc", limit=1)
        action = super().action_import()
        created = Contact.with_context(active_test=False).search(
            [("id", ">", last_contact.id), ("create_date", "=", self.env.cr.now())]
        )
        if created:
            self.env["marketing.event"]._emit_contacts_imported(created, self.mailing_list_ids)
        return action
