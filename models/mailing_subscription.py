from odoo import api
from odoo import models

# Set while a mailing contact or list writes its subscriptions itself: the
# outer call compares before and after and emits, the inner ones stay quiet.
TRACKED_CONTEXT_KEY = "marketing_subscriptions_tracked"
SUBSCRIPTION_FIELDS = {"opt_out", "opt_out_datetime", "opt_out_reason_id", "contact_id", "list_id"}


class MailingSubscription(models.Model):
    """Log list_subscribed / list_unsubscribed internal events.

    Subscriptions change through this model (opt-out links, the list's
    subscription tab) but also through the ``list_ids`` / ``contact_ids``
    many2many of mailing contacts and lists, which write the same table
    without calling this model: those extensions take a snapshot of the
    subscriptions before and after and hand the difference to
    ``_marketing_emit_changes``.

    The event is about the Odoo contact (``res.partner``) whose normalized
    email is the mailing contact's; a mailing contact matching none emits
    nothing (subscribing to a newsletter does not create a contact).
    """

    _inherit = "mailing.subscription"

    @api.model_create_multi
    def create(self, vals_list):
        subscriptions = super().create(vals_list)
        if not self.env.context.get(TRACKED_CONTEXT_KEY):
            self._marketing_emit_changes({}, subscriptions._marketing_states())
        return subscriptions

    def write(self, vals):
        if self.env.context.get(TRACKED_CONTEXT_KEY) or not SUBSCRIPTION_FIELDS & vals.keys():
            return super().write(vals)
        before = self._marketing_states()
        result = super().write(vals)
        self._marketing_emit_changes(before, self._marketing_states())
        return result

    def unlink(self):
        before = {} if self.env.context.get(TRACKED_CONTEXT_KEY) else self._marketing_states()
        result = super().unlink()
        if before:
            self._marketing_emit_changes(before, {})
        return result

    # ------------------------------------------------------------------
    # Snapshots and emission
    # ------------------------------------------------------------------

    def _marketing_states(self):
        """{(mailing contact id, list id): (opted out, opt-out reason id)} of these subscriptions."""
        return {
            (subscription.contact_id.id, subscription.list_id.id): (
                subscription.opt_out,
                subscription.opt_out_reason_id.id,
            )
            for subscription in self
        }

    @api.model
    def _marketing_snapshot(self, contact_ids=None, list_ids=None):
        """The states of every subscription of these mailing contacts or lists, in one query."""
        field_name, ids = ("contact_id", contact_ids) if contact_ids is not None else ("list_id", list_ids)
        if not ids:
            return {}
        # sudo: a snapshot only compares states before and after a change
        # the user is already allowed to make.
        return self.sudo().search([(field_name, "in", list(ids))])._marketing_states()

    @api.model
    def _marketing_emit_changes(self, before, after):
        """Emit list_subscribed / list_unsubscribed for each subscription whose state changed.

        Subscribed: a new subscription that is not opted out, or an opt-out
        withdrawn. Unsubscribed: an opt-out, or an active subscription removed.
        """
        subscribed, unsubscribed = [], []
        for pair in before.keys() | after.keys():
            was_member = pair in before and not before[pair][0]
            is_member = pair in after and not after[pair][0]
            if is_member and not was_member:
                subscribed.append(pair)
            elif was_member and not is_member:
                unsubscribed.append(pair)
        if not subscribed and not unsubscribed:
            return
        pairs = subscribed + unsubscribed
        # sudo: only emails and names are read, to describe the event.
        contacts = self.env["mailing.contact"].sudo().with_context(active_test=False)
        contacts = contacts.browse({contact_id for contact_id, _list_id in pairs}).exists()
        emails = {contact.id: contact.email_normalized for contact in contacts}
        mailing_lists = self.env["mailing.list"].sudo().with_context(active_test=False)
        mailing_lists = mailing_lists.browse({list_id for _contact_id, list_id in pairs}).exists()
        list_names = {mailing_list.id: mailing_list.name for mailing_list in mailing_lists}
        reasons = (
            self.env["mailing.subscription.optout"]
            .sudo()
            .browse({after[pair][1] for pair in unsubscribed if pair in after and after[pair][1]})
        )
        reason_names = {reason.id: reason.name for reason in reasons}
        partner_by_email = self.env["res.partner"]._marketing_partner_ids_by("email_normalized", emails.values())
        partners = self.env["res.partner"].sudo().browse(set(partner_by_email.values()))
        companies = {partner.id: partner.company_id.id or None for partner in partners}

        def events(pairs, unsubscribing):
            result = []
            for contact_id, list_id in pairs:
                partner_id = partner_by_email.get(emails.get(contact_id))
                if not partner_id or list_id not in list_names:
                    continue
                params = {
                    "list_id": list_id,
                    "list_name": list_names[list_id],
                    "mailing_contact_id": contact_id,
                    "email": emails[contact_id],
                }
                if unsubscribing:
                    reason_id = after.get((contact_id, list_id), (None, None))[1]
                    params["reason"] = reason_names.get(reason_id)
                result.append({"partner_id": partner_id, "company_id": companies.get(partner_id), "params": params})
            return result

        Event = self.env["marketing.event"]
        Event._emit("list_subscribed", events(subscribed, unsubscribing=False))
        Event._emit("list_unsubscribed", events(unsubscribed, unsubscribing=True))
