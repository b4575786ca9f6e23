import json
from collections import defaultdict

import psycopg2
from psycopg2 import errorcodes

from odoo import api
from odoo import models
from odoo.tools import SQL

from ..utils.payload import CONTACT_TEXT_MAX_LENGTH
from ..utils.payload import EVENT_KEY_MAX_LENGTH
from ..utils.payload import EVENT_KEY_PATTERN
from ..utils.payload import IDEMPOTENCY_KEY_MAX_LENGTH
from ..utils.payload import KEPT_CONTEXT_KEYS
from ..utils.payload import SEGMENT_MAX_MESSAGE_SIZE
from ..utils.payload import EventRejected
from ..utils.payload import check_json_value
from ..utils.payload import is_anonymous
from ..utils.payload import normalize_anonymous_id
from ..utils.payload import normalize_email
from ..utils.payload import parse_timestamp
from ..utils.payload import phone_e164
from ..utils.payload import relabel
from ..utils.payload import segment_event_key
from ..utils.payload import segment_timestamp
from ..utils.scores import score_band

# Odoo ids are PostgreSQL integers.
MAX_CONTACT_ID = 2**31 - 1


class ConcurrentContactCreation(psycopg2.errors.SerializationFailure):
    """Another transaction created the contact; Odoo's retry loop replays the request on this SQLSTATE."""

    pgcode = errorcodes.SERIALIZATION_FAILURE


class MarketingEventIngestion(models.AbstractModel):
    """What the HTTP API does with a request: check each event, resolve its contact, store the good ones.

    ``marketing.event`` inherits it: the controllers call
    ``env["marketing.event"]._ingest()`` (native API) and ``_ingest_segment()``
    (Segment/RudderStack), which store through the log's ``_insert_events``.
    The payload checks that need no database are in ``utils/payload.py``.
    """

    _name = "marketing.event.ingestion"
    _description = "Marketing Event Ingestion"

    @api.model
    def _normalize_native_event(self, raw):
        """Check one event of the native API and return its normalized form."""
        if not isinstance(raw, dict):
            raise EventRejected("event: must be a JSON object")
        key = raw.get("event")
        if not isinstance(key, str) or not key:
            raise EventRejected("event: required, the event type key as a string")
        if len(key) > EVENT_KEY_MAX_LENGTH:
            raise EventRejected(f"event: longer than {EVENT_KEY_MAX_LENGTH} characters")
        if not EVENT_KEY_PATTERN.match(key):
            raise EventRejected("event: use only Latin letters, digits, '_', '.' and '-'")
        idempotency_key = raw.get("event_id")
        if idempotency_key is not None:
            if isinstance(idempotency_key, bool) or not isinstance(idempotency_key, (str, int)):
                raise EventRejected("event_id: must be a string or an integer")
            idempotency_key = str(idempotency_key)
            if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX_LENGTH:
                raise EventRejected(f"event_id: must have 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
            check_json_value(idempotency_key, "event_id")
        params = raw.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise EventRejected("params: must be a JSON object")
        check_json_value(params, "params")
        contact = raw.get("contact")
        if contact is not None and not isinstance(contact, dict):
            raise EventRejected("contact: must be a JSON object")
        return {
            "key": key,
            "anonymous_id": normalize_anonymous_id(raw.get("anonymous_id"), "anonymous_id"),
            "idempotency_key": idempotency_key,
            "occurred_at": parse_timestamp(raw.get("timestamp")),
            "contact": self._marketing_normalize_contact(contact or {}),
            "params": params,
        }

    @api.model
    def _ingest(self, source, raw_events, normalizer=None):
        """Validate, resolve and store the events of one API request.

        Returns one result per raw event, in order: ``{"status": "accepted" |
        "duplicate" | "rejected", "id", "reason", "code"}``. Rejections never
        stop the good events of the same request from being stored.
        """
        normalizer = normalizer or self._normalize_native_event
        company = source.company_id
        results = [None] * len(raw_events)
        candidates = []  # (position, normalized event)
        for position, raw in enumerate(raw_events):
            try:
                candidates.append((position, normalizer(raw)))
            except EventRejected as rejection:
                results[position] = {"status": "rejected", "reason": rejection.reason, "code": rejection.code}

        types_by_key = self._resolve_event_types(
            source, {event["key"]: event.get("name") or event["key"] for _position, event in candidates}
        )
        rows, rejected_rows, row_positions, rejected_positions = [], [], [], []
        contacts_to_resolve = []
        for position, event in candidates:
            event_type = types_by_key.get(event["key"])
            try:
                if isinstance(event_type, EventRejected):
                    raise event_type
                # What Odoo records itself (emails opened, scores, imports,
                # schedules) drives scores and system automations: a shop may
                # not forge it, whatever the source allows.
                if event_type.is_internal:
                    raise EventRejected(f"event: {event['key']!r} is recorded by Odoo itself", code="not_allowed")
                if event_type.scope != "contact":
                    raise EventRejected(
                        f"event: {event['key']!r} is a system event, recorded by Odoo itself", code="not_allowed"
                    )
                if not source._check_type_allowed(event_type):
                    raise EventRejected(
                        f"event: the type {event['key']!r} is not allowed for this source", code="not_allowed"
                    )
                if not event_type.active:
                    raise EventRejected(f"event: the type {event['key']!r} is inactive")
                if source.kind == "website" and event["contact"].get("id"):
                    # A website key is public: Odoo ids are easy to guess.
                    raise EventRejected(
                        "contact.id: a website key cannot address a contact by its Odoo id, "
                        "send external_id, email or phone",
                        code="not_allowed",
                    )
                if source.max_params_bytes:
                    # Measured as Segment measures a message; kept for the INSERT.
                    event["params_json"] = json.dumps(event["params"], ensure_ascii=False, separators=(",", ":"))
                    size = len(event["params_json"].encode())
                    if size > source.max_params_bytes:
                        field_name = relabel("params", event.get("labels"))
                        raise EventRejected(
                            f"{field_name}: larger than {source.max_params_bytes} bytes ({size} bytes)",
                            code="too_large",
                        )
                errors = event_type._params_errors(event["params"])
                if errors:
                    reason = "; ".join(relabel(error, event.get("labels")) for error in errors)
                    rejected_rows.append((event_type, event, reason))
                    rejected_positions.append(position)
                    results[position] = {"status": "rejected", "reason": reason, "code": "invalid_params"}
                    continue
            except EventRejected as rejection:
                results[position] = {"status": "rejected", "reason": rejection.reason, "code": rejection.code}
                continue
            contacts_to_resolve.append((position, event, event_type))

        # A visitor known only by an anonymous id: its events are stored
        # without contact, or with the contact its id already joined.
        anonymous_partner_ids = self._anonymous_partner_ids(
            company,
            [event["anonymous_id"] for _position, event, _type in contacts_to_resolve if is_anonymous(event)],
        )
        # The contact_created events of new contacts go into the same INSERT
        # as the request's events, before them.
        contact_events = []
        partner_ids = self._marketing_resolve_contacts(
            [
                event["contact"]
                for _position, event, event_type in contacts_to_resolve
                if event_type.scope == "contact" and not is_anonymous(event)
            ],
            company,
            create=source.unknown_contact_policy == "create",
            log_events=contact_events,
            source=source,
        )
        partner_iterator = iter(partner_ids)
        for position, event, event_type in contacts_to_resolve:
            partner_id = None
            if is_anonymous(event):
                partner_id = anonymous_partner_ids.get(event["anonymous_id"])
            elif event_type.scope == "contact":
                partner_id = next(partner_iterator)
                if isinstance(partner_id, EventRejected):
                    reason = relabel(partner_id.reason, event.get("labels"))
                    results[position] = {"status": "rejected", "reason": reason, "code": partner_id.code}
                    continue
            rows.append((event_type, event, partner_id))
            row_positions.append(position)

        stored = self._insert_events(
            contact_events
            + [
                {
                    "type": event_type,
                    "key": event["key"],
                    "partner_id": partner_id,
                    "anonymous_id": event.get("anonymous_id"),
                    "context": event.get("context"),
                    "company_id": company.id,
                    "source_id": source.id,
                    "idempotency_key": event["idempotency_key"],
                    "params": event["params"],
                    "params_json": event.get("params_json"),
                    "max_structure_paths": source.max_structure_paths,
                    "occurred_at": event["occurred_at"],
                    # Without a contact there is nothing to dispatch: no
                    # scenario, score rule or wait reacts to it, now or
                    # once the visitor is identified.
                    "state": "pending" if partner_id else "processed",
                }
                for event_type, event, partner_id in rows
            ]
        )[len(contact_events) :]
        self._merge_anonymous_histories(
            company,
            [
                (anonymous_id, partner_id)
                for event_id, (_type, event, partner_id) in zip(stored, rows)
                if event_id and partner_id
                for anonymous_id in (event.get("anonymous_id"), *event.get("merge_anonymous_ids", ()))
                if anonymous_id
            ],
        )
        for position, event_id, (_event_type, event, _partner_id) in zip(row_positions, stored, rows):
            if event_id:
                results[position] = {"status": "accepted", "id": event_id}
            else:
                field_name = relabel("event_id", event.get("labels"))
                results[position] = {"status": "duplicate", "reason": f"{field_name}: already received"}
        if rejected_rows:
            rejected_ids = self._insert_events(
                [
                    {
                        "type": event_type,
                        "key": event["key"],
                        "partner_id": None,
                        "company_id": company.id,
                        "source_id": source.id,
                        "idempotency_key": event["idempotency_key"],
                        "params": event["params"],
                        "occurred_at": event["occurred_at"],
                        "state": "rejected",
                        "error_message": reason,
                    }
                    for event_type, event, reason in rejected_rows
                ]
            )
            for position, event_id in zip(rejected_positions, rejected_ids):
                results[position]["id"] = event_id
        return results

    @api.model
    def _normalize_segment_message(self, message, sent_at=None, visitor_ip=None):
        """Map one Segment message (track, identify, page, screen) onto a native event.

        Rejections name the fields as Segment wrote them (``properties.total``,
        ``messageId``), not as the native API does.
        """
        if not isinstance(message, dict):
            raise EventRejected("message: must be a JSON object")
        # Measured as Segment's libraries measure it, so that whatever they let
        # through is accepted here too.
        size = len(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode(errors="surrogatepass"))
        if size > SEGMENT_MAX_MESSAGE_SIZE:
            raise EventRejected(
                f"message: larger than {SEGMENT_MAX_MESSAGE_SIZE // 1024} KB ({size} bytes)", code="too_large"
            )
        call = message.get("type")
        context = message.get("context")
        if context is not None and not isinstance(context, dict):
            raise EventRejected("context: must be a JSON object")
        context = context or {}
        traits_label = "context.traits"
        if call == "track":
            name = message.get("event")
            if not isinstance(name, str) or not name.strip():
                raise EventRejected("event: required for a track call, the event name as a string")
            check_json_value(name, "event")
            if len(name.strip()) > EVENT_KEY_MAX_LENGTH:
                # Cut short, two long names could end up as one event type.
                raise EventRejected(f"event: longer than {EVENT_KEY_MAX_LENGTH} characters")
            params = message.get("properties")
            params_label = "properties"
            traits = context.get("traits")
        elif call in ("page", "screen"):
            name = "Page Viewed" if call == "page" else "Screen Viewed"
            params = message.get("properties")
            params_label = "properties"
            if isinstance(params, dict):
                params = dict(params)
                for field_name in ("name", "category"):
                    if isinstance(message.get(field_name), str):
                        params.setdefault(field_name, message[field_name])
            traits = context.get("traits")
        elif call == "identify":
            name = "Identify"
            traits = message.get("traits")
            traits_label = "traits"
            if traits is None:
                traits, traits_label = context.get("traits"), "context.traits"
            params, params_label = traits, traits_label
        elif call == "group":
            name = "Group"
            group_id = message.get("groupId")
            if isinstance(group_id, int) and not isinstance(group_id, bool):
                group_id = str(group_id)
            if not isinstance(group_id, str) or not group_id.strip():
                raise EventRejected("groupId: required for a group call, the company's id as a string")
            group_traits = message.get("traits")
            if group_traits is not None and not isinstance(group_traits, dict):
                raise EventRejected("traits: must be a JSON object")
            # The traits of a group call are the company's; the visitor's
            # own are in the context.
            params = dict(group_traits or {}, groupId=group_id.strip())
            params_label = "traits"
            traits = context.get("traits")
        elif call == "alias":
            name = "Alias"
            previous_id = normalize_anonymous_id(message.get("previousId"), "previousId")
            if not previous_id:
                raise EventRejected("previousId: required for an alias call, the id the visitor had before")
            if message.get("userId") in (None, ""):
                raise EventRejected("userId: required for an alias call, the id the visitor has now")
            params, params_label = {"previousId": previous_id}, "previousId"
            traits = context.get("traits")
        elif call is None:
            raise EventRejected("type: required, one of track, identify, page, screen, group, alias")
        else:
            raise EventRejected(
                f"type: {call!r} messages are not supported (use track, identify, page, screen, group or alias)"
            )
        if traits is not None and not isinstance(traits, dict):
            raise EventRejected(f"{traits_label}: must be a JSON object")
        traits = traits or {}
        key = segment_event_key(name)
        if not key:
            raise EventRejected("event: needs at least one Latin letter or digit")
        contact = {"external_id": message.get("userId")}
        for field_name in ("email", "phone", "name"):
            if traits.get(field_name) not in (None, ""):
                contact[field_name] = traits[field_name]
        if "name" not in contact and (traits.get("firstName") or traits.get("lastName")):
            contact["name"] = " ".join(
                traits[part].strip() for part in ("firstName", "lastName") if isinstance(traits.get(part), str)
            )
        anonymous_id = normalize_anonymous_id(message.get("anonymousId"), "anonymousId")
        if not anonymous_id and not any(
            contact.get(field_name) not in (None, "") for field_name in ("external_id", "email", "phone")
        ):
            raise EventRejected(
                f"userId: required to find the contact, send userId, anonymousId, {traits_label}.email "
                f"or {traits_label}.phone",
                code="unknown_contact",
            )
        labels = {
            "event_id": "messageId",
            "params": params_label,
            "contact.external_id": "userId",
            "contact.email": f"{traits_label}.email",
            "contact.phone": f"{traits_label}.phone",
            "contact.name": f"{traits_label}.name",
        }
        try:
            event = self._normalize_native_event(
                {
                    "event": key,
                    "event_id": message.get("messageId"),
                    "contact": {name: value for name, value in contact.items() if value is not None},
                    "params": params,
                }
            )
        except EventRejected as rejection:
            raise EventRejected(relabel(rejection.reason, labels), rejection.code) from rejection
        event["occurred_at"] = segment_timestamp(message, sent_at)
        kept_context = {key: context[key] for key in KEPT_CONTEXT_KEYS if context.get(key) not in (None, "", {})}
        if visitor_ip and "ip" not in kept_context:
            # Segment's own API records the address the browser sent from.
            kept_context["ip"] = visitor_ip
        check_json_value(kept_context, "context")
        return event | {
            "name": name.strip()[:EVENT_KEY_MAX_LENGTH],
            "segment_call": call,
            "labels": labels,
            "anonymous_id": anonymous_id,
            "context": kept_context or None,
            "merge_anonymous_ids": [params["previousId"]] if call == "alias" else [],
            "group": params if call == "group" else None,
        }

    @api.model
    def _ingest_segment(self, source, messages, batch_context=None, sent_at=None, visitor_ip=None):
        """Ingest Segment messages; identify calls also update their contact from its traits.

        ``sent_at``: the batch's ``sentAt``, for messages without their own;
        ``visitor_ip``: the address a browser sent them from, kept as their
        ``context.ip`` when they name none.
        """
        normalized = {}

        def normalizer(message):
            original = message
            if isinstance(message, dict) and isinstance(batch_context, dict) and not message.get("context"):
                message = dict(message, context=batch_context)
            normalized[id(original)] = event = self._normalize_segment_message(message, sent_at, visitor_ip)
            return event

        results = self._ingest(source, messages, normalizer=normalizer)
        identified = {
            result["id"]: normalized[id(message)]["contact"]
            for result, message in zip(results, messages)
            if result["status"] == "accepted" and normalized.get(id(message), {}).get("segment_call") == "identify"
        }
        labels = {
            result["id"]: normalized[id(message)]["labels"]
            for result, message in zip(results, messages)
            if result.get("id") in identified
        }
        if source.kind == "website":
            # A website key is public: whoever reads the page could send it.
            not_applied = self.browse(list(identified))._contact_changes_refused(identified, labels)
        else:
            not_applied = self.browse(list(identified))._update_contacts_from_traits(identified, source, labels)
        groups = {
            result["id"]: normalized[id(message)]["group"]
            for result, message in zip(results, messages)
            if result["status"] == "accepted" and normalized.get(id(message), {}).get("group")
        }
        for event_id, reasons in self.browse(list(groups))._apply_group_calls(groups, source).items():
            not_applied.setdefault(event_id, []).extend(reasons)
        for result in results:
            if not_applied.get(result.get("id")):
                result["not_applied"] = not_applied[result["id"]]
        return results

    @api.model
    def _odoo_user_partner_ids(self, partners):
        """The ids of those of ``partners`` that are an Odoo user's contact (internal or portal, archived too)."""
        # sudo: whoever may read users, only which contacts are theirs leaves the query.
        users = self.env["res.users"].sudo().with_context(active_test=False)
        return set(users.search([("partner_id", "in", partners.ids)]).partner_id.ids)

    def _contact_changes_refused(self, contacts_by_event_id, labels_by_event_id):
        """What the identify calls of a website key would have changed: ``{event id: ["traits.email: ..."]}``."""
        not_applied = defaultdict(list)
        for event in self.filtered("partner_id"):
            contact = contacts_by_event_id.get(event.id) or {}
            partner = event.partner_id
            phone = contact.get("phone") and phone_e164(contact["phone"], event.company_id.country_id.code)
            changes = {
                "contact.name": contact.get("name") and contact["name"] != partner.name,
                "contact.email": contact.get("email") and contact["email"] != partner.email_normalized,
                "contact.phone": phone and phone != partner.phone_sanitized,
                "contact.external_id": contact.get("external_id")
                and contact["external_id"] != partner.marketing_external_id,
            }
            labels = labels_by_event_id.get(event.id) or {}
            not_applied[event.id] = [
                f"{labels.get(field_name, field_name)}: not applied, a website key never changes contact details"
                for field_name, changed in changes.items()
                if changed
            ]
        return not_applied

    def _apply_group_calls(self, groups_by_event_id, source):
        """Make the company of each group call (B2B: the visitor's employer) the parent of the event's contact.

        The company is a company-type contact whose external id is
        ``group:<groupId>``, so that group and user ids of a shop never meet;
        it is found, or created as the source's policy and daily cap of new
        contacts allow. The contact changes under the rules of identify: never
        a contact of an Odoo user, only contacts this source created unless it
        may update contact details, never through a website key. Returns
        ``{event id: ["groupId: not applied, <why>"]}``.
        """
        not_applied = defaultdict(list)
        events = self.filtered("partner_id")
        if not events:
            return not_applied
        if source.kind == "website":
            for event in events:
                not_applied[event.id].append("groupId: not applied, a website key never changes contacts")
            return not_applied
        Partner = self.env["res.partner"]
        company = source.company_id
        company_contacts = []
        for event in events:
            group = groups_by_event_id[event.id]
            name = group.get("name") if isinstance(group.get("name"), str) else None
            try:
                company_contacts.append(
                    self._marketing_normalize_contact(
                        {"external_id": f"group:{group['groupId']}", "name": name}, prefix="traits"
                    )
                )
            except EventRejected as rejection:
                company_contacts.append(rejection)
        company_events = []
        resolved = iter(
            self._marketing_resolve_contacts(
                [contact for contact in company_contacts if not isinstance(contact, EventRejected)],
                company,
                create=source.unknown_contact_policy == "create",
                log_events=company_events,
                source=source,
            )
        )
        company_ids = [
            contact if isinstance(contact, EventRejected) else next(resolved) for contact in company_contacts
        ]
        self._insert_events(company_events)
        # sudo: what the found companies are; only this leaves the queries.
        sudo_partners = Partner.sudo().with_context(active_test=False)
        user_partner_ids = self._odoo_user_partner_ids(events.partner_id)
        found = sudo_partners.browse([partner_id for partner_id in company_ids if isinstance(partner_id, int)])
        # A company contact this source just created is created as a person.
        found.filtered(lambda partner: not partner.is_company and partner.marketing_source_id == source).write(
            {"is_company": True}
        )
        contacts_by_company = defaultdict(list)
        for event, company_id in zip(events, company_ids):
            partner = event.partner_id
            if isinstance(company_id, EventRejected):
                reason = company_id.reason.partition(": ")[2]
            elif not sudo_partners.browse(company_id).is_company:
                reason = self.env._("the contact with this external id is not a company")
            elif company_id in (partner.id, partner.parent_id.id):
                continue
            elif partner.id in user_partner_ids:
                reason = self.env._("the contact belongs to an Odoo user")
            elif partner.marketing_source_id != source and not source.allow_contact_update:
                reason = self.env._("the contact was not created by this source")
            elif partner.is_company:
                reason = self.env._("the contact is a company itself")
            else:
                contacts_by_company[company_id].append(partner.id)
                continue
            not_applied[event.id].append(f"groupId: not applied, {reason}")
        for company_id, partner_ids in contacts_by_company.items():
            Partner.browse(partner_ids).write({"parent_id": company_id})
        return not_applied

    def _update_contacts_from_traits(self, contacts_by_event_id, source, labels_by_event_id=None):
        """Write the name, email, phone and external id an identify call gave to its contact, where allowed.

        Contact details belong to Odoo: the contact of an Odoo user (internal
        or portal) never changes through the API, since its email is a login
        and where password resets go; other contacts change only when this
        source created them or may update contact details. A contact keeps
        its external id, and never takes one another contact holds. Returns
        ``{event id: ["traits.email: not applied, <why>"]}`` for the answer.

        Contacts are written one by one because each gets its own values and
        the ORM keeps the normalized email and sanitized phone in step; only
        contacts that really change are written.
        """
        Partner = self.env["res.partner"]
        events = self.filtered("partner_id")
        # sudo: which contacts are Odoo users' and which external ids are
        # taken, whoever may read them; only these facts leave the queries.
        user_partner_ids = set(
            self.env["res.users"]
            .sudo()
            .with_context(active_test=False)
            .search([("partner_id", "in", events.partner_id.ids)])
            .partner_id.ids
        )
        external_ids = [contact.get("external_id") for contact in contacts_by_event_id.values()]
        taken_external_ids = defaultdict(set)
        for record in (
            Partner.sudo()
            .with_context(active_test=False)
            .search_read(
                [("marketing_external_id", "in", [value for value in external_ids if value])],
                ["id", "marketing_external_id"],
            )
        ):
            taken_external_ids[record["marketing_external_id"]].add(record["id"])
        not_applied = defaultdict(list)
        for event in events:
            contact = contacts_by_event_id.get(event.id) or {}
            labels = (labels_by_event_id or {}).get(event.id) or {}
            partner = event.partner_id
            values = {}
            name = contact.get("name")
            if name and name != partner.name:
                values["name"] = name
            email = contact.get("email")
            if email and email != partner.email_normalized:
                values["email"] = email
            if contact.get("phone"):
                phone = phone_e164(contact["phone"], event.company_id.country_id.code)
                if phone and phone != partner.phone_sanitized:
                    values["phone"] = phone
            external_id = contact.get("external_id")
            if external_id and external_id != partner.marketing_external_id:
                if partner.marketing_external_id:
                    reason = self.env._("the contact is linked to another external id")
                elif taken_external_ids[external_id] - {partner.id}:
                    reason = self.env._("another contact holds this external id")
                else:
                    reason = None
                    values["marketing_external_id"] = external_id
                if reason:
                    field_label = labels.get("contact.external_id", "contact.external_id")
                    not_applied[event.id].append(f"{field_label}: not applied, {reason}")
            if not values:
                continue
            if partner.id in user_partner_ids:
                reason = self.env._("the contact belongs to an Odoo user")
            elif partner.marketing_source_id != source and not source.allow_contact_update:
                reason = self.env._("the contact was not created by this source")
            else:
                partner.write(values)
                if "marketing_external_id" in values:
                    taken_external_ids[external_id].add(partner.id)
                continue
            fields_by_value = {
                "name": "contact.name",
                "email": "contact.email",
                "phone": "contact.phone",
                "marketing_external_id": "contact.external_id",
            }
            for field_name in values:
                native = fields_by_value[field_name]
                not_applied[event.id].append(f"{labels.get(native, native)}: not applied, {reason}")
        return not_applied

    @api.model
    def _resolve_event_types(self, source, names_by_key):
        """Map each key to its type, registering unknown ones if the source may."""
        EventType = self.env["marketing.event.type"]
        types_by_key = EventType._get_by_keys(names_by_key, source.company_id)
        unknown = sorted(names_by_key.keys() - types_by_key.keys())
        if not unknown:
            return types_by_key
        if not source.allow_all_types:
            # A type registered now could not be among the source's allowed
            # types: refuse it without leaving a new type behind.
            for key in unknown:
                types_by_key[key] = EventRejected(
                    f"event: the type {key!r} is not allowed for this source", code="not_allowed"
                )
        elif source.unknown_type_policy == "register":
            allowed = source._consume_quota("event_types", len(unknown), source.max_new_types_per_day)
            for key in unknown[allowed:]:
                types_by_key[key] = EventRejected(
                    f"event: unknown event type {key!r}, and this source registered its "
                    f"{source.max_new_types_per_day} new event types of the day",
                    code="limit_exceeded",
                )
            registered = EventType._register_unknown_keys(
                {key: names_by_key[key] for key in unknown[:allowed]}, source.company_id, source=source
            )
            types_by_key.update({event_type.key: event_type for event_type in registered})
        else:
            for key in unknown:
                types_by_key[key] = EventRejected(f"event: unknown event type {key!r}", code="unknown_type")
        return types_by_key

    # ------------------------------------------------------------------
    # Contacts of the posted events
    # ------------------------------------------------------------------

    @api.model
    def _marketing_normalize_contact(self, contact, prefix="contact"):
        """Check the identifiers of a posted contact; raise EventRejected naming the field."""
        normalized = {}
        contact_id = contact.get("id")
        if contact_id is not None:
            if isinstance(contact_id, bool) or not isinstance(contact_id, int) or not 0 < contact_id <= MAX_CONTACT_ID:
                raise EventRejected(f"{prefix}.id: must be a positive integer (an Odoo contact id)")
            normalized["id"] = contact_id
        for field_name in ("external_id", "email", "phone", "name"):
            value = contact.get(field_name)
            if value is None or value == "":
                continue
            if field_name == "external_id" and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise EventRejected(f"{prefix}.{field_name}: must be a string")
            value = value.strip()
            if len(value) > CONTACT_TEXT_MAX_LENGTH:
                raise EventRejected(f"{prefix}.{field_name}: longer than {CONTACT_TEXT_MAX_LENGTH} characters")
            check_json_value(value, f"{prefix}.{field_name}")
            normalized[field_name] = value
        if "email" in normalized:
            email = normalize_email(normalized["email"])
            if not email:
                raise EventRejected(f"{prefix}.email: not a valid email address")
            normalized["email"] = email
        return normalized

    @api.model
    def _marketing_resolve_contacts(self, contacts, company, create=True, log_events=None, source=None):
        """Find (or create) the partner of each posted contact, with one query per identifier kind.

        Identifiers are tried in order: Odoo id, external id, normalized
        email, phone in E.164 (the company's country is the default region).
        An Odoo id never finds the contact of an Odoo user: ids are easy to
        guess, and such a contact is found only by what the shop knows of it.
        Returns a list aligned on ``contacts``: a partner id or an
        EventRejected saying why there is none. ``log_events``: see
        ``_marketing_create_contacts``. ``source``: the API source, which
        the new contacts remember and whose daily cap of new contacts applies.
        """
        if not contacts:
            return []
        # Read only for a phone: the company's country is a related field of
        # its partner, whose whole row the ORM would read on every request.
        to_parse = [contact for contact in contacts if "phone" in contact and "phone_e164" not in contact]
        country_code = company.country_id.code if to_parse else None
        for contact in to_parse:
            contact["phone_e164"] = phone_e164(contact["phone"], country_code)
        # sudo: the API resolves contacts on behalf of a shop authenticated
        # by its write key; visibility is bounded by the company below.
        Partner = self.env["res.partner"].sudo().with_context(active_test=False)
        visible_company_ids = {company.id, False}

        def lookup(field_name, values):
            values = list({value for value in values if value})
            if not values:
                return {}
            found = {}
            # The company is checked here rather than in the domain: with its
            # "company_id IN (...) OR company_id IS NULL" PostgreSQL gives up
            # the identifier's index for a scan of the whole contact table.
            for record in Partner.search_read([(field_name, "in", values)], [field_name, "company_id"], order="id"):
                company_id = record["company_id"] and record["company_id"][0]
                if company_id in visible_company_ids:
                    found.setdefault(record[field_name], record["id"])
            return found

        by_id = lookup("id", [contact.get("id") for contact in contacts])
        if by_id:
            # sudo: which of these contacts are Odoo users' (internal or
            # portal, archived too); only their ids leave the query.
            user_partner_ids = set(
                self.env["res.users"]
                .sudo()
                .with_context(active_test=False)
                .search([("partner_id", "in", list(by_id.values()))])
                .partner_id.ids
            )
            by_id = {key: partner_id for key, partner_id in by_id.items() if partner_id not in user_partner_ids}
        by_external_id = lookup("marketing_external_id", [contact.get("external_id") for contact in contacts])
        by_email = lookup("email_normalized", [contact.get("email") for contact in contacts])
        by_phone = lookup("phone_sanitized", [contact.get("phone_e164") for contact in contacts])

        results = [None] * len(contacts)
        to_create = {}  # identity -> (create values, [positions])
        for position, contact in enumerate(contacts):
            partner_id = (
                by_id.get(contact.get("id"))
                or by_external_id.get(contact.get("external_id"))
                or by_email.get(contact.get("email"))
                or by_phone.get(contact.get("phone_e164"))
            )
            if partner_id:
                results[position] = partner_id
                continue
            if not any(contact.get(name) for name in ("id", "external_id", "email", "phone")):
                results[position] = EventRejected(
                    "contact: required, give at least one of id, external_id, email, phone", code="unknown_contact"
                )
                continue
            if "phone" in contact and not contact.get("phone_e164"):
                results[position] = EventRejected("contact.phone: not a valid phone number", code="unknown_contact")
                continue
            if not create or not any(contact.get(name) for name in ("external_id", "email", "phone")):
                identifiers = ", ".join(
                    f"{name}={contact[name]}" for name in ("id", "external_id", "email", "phone") if contact.get(name)
                )
                results[position] = EventRejected(f"contact: no contact matches {identifiers}", code="unknown_contact")
                continue
            identity = contact.get("external_id") or contact.get("email") or contact.get("phone_e164")
            entry = to_create.setdefault(
                identity, (self._marketing_contact_create_values(contact, company, source), [])
            )
            entry[1].append(position)
        if to_create and source:
            allowed = source._consume_quota("contacts", len(to_create), source.max_new_contacts_per_day)
            for identity in list(to_create)[allowed:]:
                for position in to_create.pop(identity)[1]:
                    results[position] = EventRejected(
                        f"contact: unknown, and this source created its {source.max_new_contacts_per_day} "
                        "new contacts of the day",
                        code="limit_exceeded",
                    )
        if to_create:
            self._marketing_check_not_created_concurrently(company, [values for values, _p in to_create.values()])
            # sudo: see above; the contacts are created in the source's company.
            created = self.sudo()._marketing_create_contacts(
                [values for values, _positions in to_create.values()], log_events=log_events
            )
            for partner, (_values, positions) in zip(created, to_create.values()):
                for position in positions:
                    results[position] = partner.id
        return results

    @api.model
    def _marketing_check_not_created_concurrently(self, company, values_list):
        """Raise a serialization failure when another request created one of these contacts meanwhile.

        Two requests bringing the same unknown contact at once would each
        create it: neither sees the other's row in its snapshot. An advisory
        lock per identifier, held until the transaction ends, makes the
        second wait for the first; a fresh snapshot (a cursor of its own)
        then shows whether the first created it. If so the request fails as
        a serialization failure does, which Odoo's retry loop replays: the
        replay finds the contact.
        """
        identifiers = {
            (kind, values[field_name])
            for values in values_list
            for kind, field_name in (("x", "marketing_external_id"), ("e", "email"), ("p", "phone"))
            if values.get(field_name)
        }
        emails = [normalize_email(value) for kind, value in identifiers if kind == "e"]
        self.env.cr.execute(
            SQL(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s || identifier, 0))"
                " FROM unnest(%s::varchar[]) AS identifier ORDER BY identifier",
                f"res.partner:{company.id}:",
                sorted(f"{kind}:{normalize_email(value) if kind == 'e' else value}" for kind, value in identifiers),
            )
        )
        with self.env.registry.cursor() as cr:
            cr.execute(
                SQL(
                    """
                    SELECT 1 FROM res_partner
                     WHERE (company_id = %(company)s OR company_id IS NULL)
                       AND (marketing_external_id = ANY(%(external_ids)s) OR email_normalized = ANY(%(emails)s)
                            OR phone_sanitized = ANY(%(phones)s))
                     LIMIT 1
                    """,
                    company=company.id,
                    external_ids=[value for kind, value in identifiers if kind == "x"],
                    emails=emails,
                    phones=[value for kind, value in identifiers if kind == "p"],
                )
            )
            created_meanwhile = cr.fetchone()
        if created_meanwhile:
            raise ConcurrentContactCreation("contact: created by a concurrent request, replay this one")

    @api.model
    def _marketing_contact_create_values(self, contact, company, source=None):
        return {
            "name": contact.get("name") or contact.get("email") or contact.get("phone") or contact.get("external_id"),
            "email": contact.get("email"),
            "phone": contact.get("phone_e164"),
            "marketing_external_id": contact.get("external_id"),
            "company_id": company.id,
            "marketing_source_id": source.id if source else False,
        }

    @api.model
    def _marketing_create_contacts(self, values_list, log_events=None):
        """Create the contacts of unknown API senders with one INSERT; return them in order.

        ``create()`` reads the defaults once per record, runs mail.thread's
        create and recomputes a dozen stored fields written back with an
        UPDATE: per contact, more than a whole request may take. These
        contacts are the simplest kind (a person without parent, address,
        image or user), so what create() computes is known in advance: the
        defaults are read once through the ORM (so ir.default and other
        modules' defaults apply), the values are converted by the fields
        themselves, the constraints are checked and ``contact_created`` is
        logged as create() does. Stored computed fields not set here (added by
        other modules) are left to the ORM to compute.
        tests/test_ingest_performance.py checks that these contacts equal
        contacts made by create(), field by field.

        ``log_events``: a list to append the contact_created events to, for a
        caller that stores them with its own events; logged here if None.
        """
        Partner = self.env["res.partner"]
        if not values_list:
            return Partner
        Partner.flush_model()
        cr = self.env.cr
        default_names = [
            name
            for name, field in Partner._fields.items()
            if field.store and field.column_type and not field.compute and not field.company_dependent
            if name not in models.MAGIC_COLUMNS
        ]
        defaults = Partner.default_get(default_names)
        # Ids first, so that each contact is its own commercial partner in the same INSERT.
        cr.execute(SQL("SELECT nextval(%s) FROM generate_series(1, %s)", f"{Partner._table}_id_seq", len(values_list)))
        new_ids = [row[0] for row in cr.fetchall()]
        now = cr.now()
        stored_list = [
            {
                **defaults,
                **values,
                "id": partner_id,
                "email_normalized": normalize_email(values["email"]) if values.get("email") else False,
                "phone_sanitized": values.get("phone") or False,  # already in E.164
                "complete_name": (values["name"] or "").strip(),
                "commercial_partner_id": partner_id,
                "commercial_company_name": False,
                "partner_share": True,
                "user_id": False,
                "company_registry": False,
                "engagement_score_band": score_band(None, False),
                "create_uid": self.env.uid,
                "create_date": now,
                "write_uid": self.env.uid,
                "write_date": now,
            }
            for partner_id, values in zip(new_ids, values_list)
        ]
        names = sorted({name for stored in stored_list for name in stored})
        rows = [
            tuple(
                Partner._fields[name].convert_to_column_insert(stored[name], Partner, stored)
                if name in stored
                else None
                for name in names
            )
            for stored in stored_list
        ]
        cr.execute(
            SQL(
                "INSERT INTO %s (%s) VALUES %s",
                SQL.identifier(Partner._table),
                SQL(", ").join(map(SQL.identifier, names)),
                SQL(", ").join(rows),
            )
        )
        partners = Partner.browse(new_ids)
        # The resized images follow image_1920, empty here; any other stored
        # computed field is computed by the ORM as for any new contact.
        for field in Partner._fields.values():
            if field.store and field.compute and field.name not in names and field.related != "image_1920":
                self.env.add_to_compute(field, partners)
        partners._validate_fields(names)
        Event = self.env["marketing.event"]
        contact_events = Event._prepare_internal_events(
            "contact_created",
            [
                {"partner_id": partner_id, "company_id": stored.get("company_id") or None, "params": {"source": "odoo"}}
                for partner_id, stored in zip(new_ids, stored_list)
            ],
        )
        if log_events is None:
            Event.sudo()._insert_events(contact_events)
        else:
            log_events.extend(contact_events)
        return partners
