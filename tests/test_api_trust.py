import base64

from odoo import fields
from odoo.tests import new_test_user
from odoo.tests import tagged

from .common import MarketingAutomationHttpCommon
from .scenario_common import ScenarioCommon

EVENTS_URL = "/automation/v1/events"
SEGMENT_URL = "/automation/segment/v1"


class ApiTrustCommon(MarketingAutomationHttpCommon):
    def post_segment(self, call, payload):
        basic = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        return self.post_json(f"{SEGMENT_URL}/{call}", payload, key=False, headers={"Authorization": basic})

    def identify(self, user_id, traits, message_id=None):
        payload = {"userId": user_id, "traits": traits}
        if message_id:
            payload["messageId"] = message_id
        response = self.post_segment("identify", payload)
        self.assertEqual(response.status_code, 200, response.text)
        [result] = response.json()["results"]
        self.assertEqual(result["status"], "accepted", "the identify event itself is always stored")
        return result

    def post_events(self, events):
        return self.post_json(EVENTS_URL, {"events": events})


@tagged("post_install", "-at_install")
class TestApiNeverChangesOdooUsersContacts(ApiTrustCommon):
    """A write key cannot take over an Odoo user's account by rewriting the email of its contact."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.employee = new_test_user(
            cls.env, login="victim.employee", email="victim@example.com", groups="base.group_user"
        )
        cls.portal = new_test_user(
            cls.env, login="victim.portal", email="portal@example.com", groups="base.group_portal"
        )
        (cls.employee.partner_id | cls.portal.partner_id).write({"company_id": False, "phone": "+32 470 99 88 77"})
        cls.portal.partner_id.phone = "+32 470 99 88 66"

    def test_identify_by_email_then_new_email_changes_nothing(self):
        for user in (self.employee, self.portal):
            with self.subTest(user=user.login):
                partner = user.partner_id
                email, login = partner.email, user.login
                first = self.identify(f"ATT-{user.id}", {"email": email})
                second = self.identify(f"ATT-{user.id}", {"email": "attacker@evil.example", "name": "Mallory"})
                self.assertEqual((partner.email, partner.name), (email, user.name), "the user's contact is unchanged")
                self.assertEqual(user.login, login, "nor the login")
                self.assertFalse(partner.marketing_external_id, "the attacker's userId is not linked to the user")
                self.assertNotEqual(self.Event.browse(second["id"]).partner_id, partner)
                self.assertIn("userId: not applied, the contact belongs to an Odoo user", first["not_applied"])

    def test_identify_by_phone_then_new_email_changes_nothing(self):
        partner = self.employee.partner_id
        result = self.identify("ATT-PHONE", {"phone": "+32 470 99 88 77", "email": "attacker@evil.example"})
        self.assertEqual(self.Event.browse(result["id"]).partner_id, partner, "found by its phone")
        self.assertEqual(partner.email, "victim@example.com")
        self.assertEqual(
            sorted(result["not_applied"]),
            [
                "traits.email: not applied, the contact belongs to an Odoo user",
                "userId: not applied, the contact belongs to an Odoo user",
            ],
        )
        self.assertEqual(partner.email, "victim@example.com")
        self.assertFalse(partner.marketing_external_id)

    def test_even_a_source_that_may_update_contacts_never_touches_users(self):
        self.source.allow_contact_update = True
        partner = self.portal.partner_id
        result = self.identify("ATT-2", {"email": "portal@example.com", "name": "Mallory", "phone": "+32 470 00 00 01"})
        self.assertEqual((partner.name, partner.phone_sanitized), (self.portal.name, "+32470998866"))
        self.assertEqual(
            sorted(result["not_applied"]),
            [
                "traits.name: not applied, the contact belongs to an Odoo user",
                "traits.phone: not applied, the contact belongs to an Odoo user",
                "userId: not applied, the contact belongs to an Odoo user",
            ],
        )
        self.assertEqual(
            (partner.name, partner.phone_sanitized, partner.marketing_external_id),
            (self.portal.name, "+32470998866", False),
        )

    def test_contact_id_never_addresses_a_user_contact(self):
        other_company = self.env["res.company"].create({"name": "Elsewhere"})
        foreign = self.env["res.partner"].create({"name": "Foreign", "company_id": other_company.id})
        self.env.cr.execute("SELECT max(id) + 1000 FROM res_partner")
        missing_id = self.env.cr.fetchone()[0]
        response = self.post_events(
            [
                {"event": "test_purchase", "contact": {"id": self.employee.partner_id.id}},
                {"event": "test_purchase", "contact": {"id": self.portal.partner_id.id}},
                {"event": "test_purchase", "contact": {"id": foreign.id}},
                {"event": "test_purchase", "contact": {"id": missing_id}},
                {"event": "test_purchase", "contact": {"id": self.partner.id}},
            ]
        )
        self.assertEqual(response.status_code, 202, response.text)
        results = response.json()["results"]
        self.assertEqual(results[4]["status"], "accepted", "a plain contact of the company is found by id")
        ids = [self.employee.partner_id.id, self.portal.partner_id.id, foreign.id, missing_id]
        for result, contact_id in zip(results, ids):
            with self.subTest(contact_id=contact_id):
                self.assertEqual(result["status"], "rejected")
                # The same answer as for an id nobody has: it tells nothing of the contact.
                self.assertEqual(
                    (result["reason"], result["code"]),
                    (f"contact: no contact matches id={contact_id}", "unknown_contact"),
                )


@tagged("post_install", "-at_install")
class TestApiChangesOnlyItsOwnContacts(ApiTrustCommon):
    """Identify changes the details of contacts this source created, of others only with the source's setting."""

    def test_contact_created_in_odoo_keeps_its_details(self):
        result = self.identify("C-77", {"email": "alice@example.com", "name": "Not Alice", "phone": "+32 470 00 00 02"})
        self.assertEqual(self.Event.browse(result["id"]).partner_id, self.partner)
        self.assertEqual((self.partner.name, self.partner.phone_sanitized), ("Alice Shopper", "+32470123456"))
        self.assertEqual(
            sorted(result["not_applied"]),
            [
                "traits.name: not applied, the contact was not created by this source",
                "traits.phone: not applied, the contact was not created by this source",
                "userId: not applied, the contact was not created by this source",
            ],
        )
        self.assertEqual(
            (self.partner.name, self.partner.phone_sanitized, self.partner.marketing_external_id),
            ("Alice Shopper", "+32470123456", False),
        )

    def test_contact_created_by_this_source_follows_its_traits(self):
        first = self.identify("C-80", {"email": "dora@example.com", "name": "Dora"})
        dora = self.Event.browse(first["id"]).partner_id
        self.assertEqual(dora.marketing_source_id, self.source)
        second = self.identify("C-80", {"email": "dora.new@example.com", "name": "Dora N."})
        self.assertNotIn("not_applied", second)
        self.assertEqual((dora.email, dora.name), ("dora.new@example.com", "Dora N."))
        other_source = self.env["marketing.event.source"].create({"name": "Other shop"})
        other_key = other_source._generate_write_key()
        basic = "Basic " + base64.b64encode(f"{other_key}:".encode()).decode()
        response = self.post_json(
            f"{SEGMENT_URL}/identify",
            {"userId": "C-80", "traits": {"email": "evil@example.com"}},
            key=False,
            headers={"Authorization": basic},
        )
        self.assertEqual(
            response.json()["results"][0]["not_applied"],
            ["traits.email: not applied, the contact was not created by this source"],
            "another source may not change the contacts of this one",
        )
        self.assertEqual(dora.email, "dora.new@example.com")

    def test_setting_lets_a_source_update_other_contacts(self):
        self.source.allow_contact_update = True
        result = self.identify("C-81", {"email": "alice@example.com", "name": "Alice S."})
        self.assertNotIn("not_applied", result)
        self.assertEqual((self.partner.name, self.partner.marketing_external_id), ("Alice S.", "C-81"))

    def test_external_id_is_never_taken_from_another_contact(self):
        self.source.allow_contact_update = True
        other_company = self.env["res.company"].create({"name": "Elsewhere"})
        holder = self.env["res.partner"].create(
            {"name": "Holder", "company_id": other_company.id, "marketing_external_id": "C-90"}
        )
        result = self.identify("C-90", {"email": "alice@example.com"})
        self.assertFalse(self.partner.marketing_external_id, "two contacts never share an external id")
        self.assertEqual(result["not_applied"], ["userId: not applied, another contact holds this external id"])
        self.assertEqual(holder.marketing_external_id, "C-90")
        self.partner.marketing_external_id = "C-91"
        result = self.identify("C-92", {"email": "alice@example.com"})
        self.assertEqual(self.partner.marketing_external_id, "C-91", "a contact is never re-linked")
        self.assertEqual(result["not_applied"], ["userId: not applied, the contact is linked to another external id"])


@tagged("post_install", "-at_install")
class TestApiRefusesWhatOdooRecords(ApiTrustCommon):
    """Internal and system event types are Odoo's own: a shop cannot post them, on either API."""

    def test_internal_and_system_types_are_refused_on_both_apis(self):
        Rule = self.env["marketing.engagement.rule"]
        opened = self.env.ref("marketing_event_automation.event_type_email_opened")
        Rule.create({"name": "Opened", "event_type_id": opened.id, "points": 50})
        custom_system = self.EventType.create({"name": "Nightly", "key": "test_nightly", "scope": "system"})
        keys = ["email_opened", "email_clicked", "score_changed", "contact_created", "contacts_imported"]
        keys += ["schedule_fired", "mailing_done", custom_system.key]
        events = [
            {"event": key, "event_id": f"forged-{key}", "contact": {"email": "alice@example.com"}, "params": {}}
            for key in keys
        ]
        response = self.post_events(events)
        self.assertEqual(response.status_code, 403, response.text)
        results = response.json()["results"]
        for key, result in zip(keys, results):
            with self.subTest(key=key):
                self.assertEqual(result["status"], "rejected")
                self.assertEqual(result["code"], "not_allowed")
                if key == custom_system.key:
                    self.assertEqual(result["reason"], f"event: {key!r} is a system event, recorded by Odoo itself")
                else:
                    self.assertEqual(result["reason"], f"event: {key!r} is recorded by Odoo itself")
        response = self.post_segment(
            "batch",
            {
                "batch": [
                    {"type": "track", "userId": "C-1", "event": "Email Opened", "messageId": "s-1"},
                    {"type": "track", "userId": "C-1", "event": "Score Changed", "messageId": "s-2"},
                    {"type": "track", "userId": "C-1", "event": "Order Completed", "messageId": "s-3"},
                ]
            },
        )
        self.assertEqual(response.status_code, 200, response.text)
        results = response.json()["results"]
        self.assertEqual([result["status"] for result in results], ["rejected", "rejected", "accepted"])
        self.assertEqual(results[0]["reason"], "event: 'email_opened' is recorded by Odoo itself")
        stored = self.Event.search([("source_id", "=", self.source.id), ("state", "!=", "rejected")])
        self.assertEqual(stored.mapped("event_key"), ["order_completed"], "nothing forged is stored")
        while self.Event._cron_dispatch():
            pass
        self.assertFalse(self.partner.engagement_score_set, "no score rule fired")


@tagged("post_install", "-at_install")
class TestApiBoundedGrowth(ApiTrustCommon):
    """The caps of a source: params size, new types per day, learned paths per type, new contacts per day."""

    def test_defaults_on_the_source(self):
        source = self.env["marketing.event.source"].create({"name": "Fresh"})
        self.assertEqual(
            (
                source.max_params_bytes,
                source.max_new_types_per_day,
                source.max_structure_paths,
                source.max_new_contacts_per_day,
                source.allow_contact_update,
            ),
            (32 * 1024, 100, 500, 10000, False),
        )

    def test_params_over_the_size_limit_are_rejected(self):
        self.source.max_params_bytes = 100
        response = self.post_events(
            [
                {"event": "test_purchase", "contact": {"email": "alice@example.com"}, "params": {"blob": "x" * 200}},
                {"event": "test_purchase", "contact": {"email": "alice@example.com"}, "params": {"total": 1}},
            ]
        )
        self.assertEqual(response.status_code, 202, response.text)
        rejected, accepted = response.json()["results"]
        self.assertEqual(accepted["status"], "accepted")
        self.assertEqual((rejected["status"], rejected["code"]), ("rejected", "too_large"))
        self.assertEqual(rejected["reason"], "params: larger than 100 bytes (211 bytes)")
        response = self.post_segment("track", {"userId": "C-1", "event": "Big", "properties": {"blob": "x" * 200}})
        self.assertEqual(response.json()["results"][0]["reason"], "properties: larger than 100 bytes (211 bytes)")

    def test_new_event_types_per_day(self):
        self.source.max_new_types_per_day = 2
        contact = {"email": "alice@example.com"}
        response = self.post_events([{"event": key, "contact": contact} for key in ("new_a", "new_b", "new_c")])
        self.assertEqual(response.status_code, 202, response.text)
        results = response.json()["results"]
        self.assertEqual([result["status"] for result in results], ["accepted", "accepted", "rejected"])
        self.assertEqual(results[2]["code"], "limit_exceeded")
        self.assertEqual(
            results[2]["reason"],
            "event: unknown event type 'new_c', and this source registered its 2 new event types of the day",
        )
        response = self.post_events([{"event": "new_d", "contact": contact}, {"event": "new_a", "contact": contact}])
        self.assertEqual([result["status"] for result in response.json()["results"]], ["rejected", "accepted"])
        registered = self.EventType.search([("registered_source_id", "=", self.source.id)])
        self.assertEqual(sorted(registered.mapped("key")), ["new_a", "new_b"])

    def test_learned_paths_per_type(self):
        self.source.max_structure_paths = 3
        contact = {"email": "alice@example.com"}
        params = {"a": 1, "b": "x", "c": True, "d": 2.5, "e": None}
        response = self.post_events([{"event": "test_purchase", "contact": contact, "params": params}])
        self.assertEqual(response.json()["accepted"], 1, "an event with more paths is accepted")
        self.type_purchase.invalidate_recordset()
        self.assertEqual(self.type_purchase.params_structure, {"a": "integer", "b": "string", "c": "boolean"})
        self.assertTrue(self.type_purchase.params_structure_full, "the type says its structure stopped growing")
        response = self.post_events([{"event": "test_purchase", "contact": contact, "params": {"f": 1}}])
        self.assertEqual(response.json()["accepted"], 1)
        self.type_purchase.invalidate_recordset()
        self.assertEqual(len(self.type_purchase.params_structure), 3)

    def test_new_contacts_per_day(self):
        self.source.max_new_contacts_per_day = 2
        events = [{"event": "test_purchase", "contact": {"email": f"new{n}@example.com"}} for n in range(3)]
        events.append({"event": "test_purchase", "contact": {"email": "alice@example.com"}})
        response = self.post_events(events)
        self.assertEqual(response.status_code, 202, response.text)
        results = response.json()["results"]
        self.assertEqual([result["status"] for result in results], ["accepted", "accepted", "rejected", "accepted"])
        self.assertEqual(
            (results[2]["code"], results[2]["reason"]),
            ("limit_exceeded", "contact: unknown, and this source created its 2 new contacts of the day"),
        )
        response = self.post_events([{"event": "test_purchase", "contact": {"email": "new9@example.com"}}])
        self.assertEqual(response.status_code, 400, "the day's contacts are spent")
        self.assertEqual(self.env["res.partner"].search_count([("marketing_source_id", "=", self.source.id)]), 2)


@tagged("post_install", "-at_install")
class TestRateLimitCountsRetriesOnce(ApiTrustCommon):
    """A request sent again by its client (same event ids) is counted once by the rate limit."""

    def hits(self):
        self.env.cr.execute("SELECT hits FROM marketing_event_source_rate WHERE source_id = %s", [self.source.id])
        return self.env.cr.fetchone()[0]

    def test_native_request_sent_again_is_counted_once(self):
        self.source.rate_limit = 2
        body = {"events": [{"event": "test_purchase", "event_id": "o-1", "contact": {"email": "alice@example.com"}}]}
        statuses = [self.post_json(EVENTS_URL, body).status_code for _attempt in range(4)]
        self.assertEqual(statuses, [202] * 4, "a client retrying a request it got no answer for is not refused")
        self.assertEqual(self.hits(), 1)
        self.assertEqual(
            self.post_json(EVENTS_URL, dict(body, events=[dict(body["events"][0], event_id="o-2")])).status_code, 202
        )
        self.assertEqual(self.hits(), 2, "another request counts")
        self.assertEqual(
            self.post_json(EVENTS_URL, {"event": "test_purchase", "contact": {"id": self.partner.id}}).status_code, 429
        )

    def test_segment_batch_sent_again_is_counted_once(self):
        self.source.rate_limit = 1
        batch = {"batch": [{"type": "track", "userId": "C-1", "event": "Viewed", "messageId": "m-1"}], "sentAt": "1"}
        self.assertEqual(self.post_segment("batch", batch).status_code, 200)
        # Segment's libraries send a new sentAt with each attempt: the messages identify the request.
        self.assertEqual(self.post_segment("batch", dict(batch, sentAt="2")).status_code, 200)
        self.assertEqual(self.hits(), 1)

    def test_replaying_one_body_does_not_get_round_the_limit(self):
        self.source.rate_limit = 2
        body = {"event": "test_purchase", "event_id": "o-9", "contact": {"email": "alice@example.com"}}
        statuses = [self.post_json(EVENTS_URL, body).status_code for _attempt in range(13)]
        self.assertEqual(statuses[:11], [202] * 11, "the first send and its free re-sends")
        self.assertEqual(statuses[11:], [202, 429], "then each re-send counts")


@tagged("post_install", "-at_install")
class TestSourceEventsStayInTheirCompany(ApiTrustCommon, ScenarioCommon):
    """A shop of company A, a contact shared by A and B: A's events never move anything of B
    (scenario triggers, exit events, waits for events, score rules, score triggers, system automations)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company_a = cls.company
        cls.company_b = cls.env["res.company"].create({"name": "Company B"})
        cls.shared = cls.env["res.partner"].create({"name": "Sam Shared", "email": "sam@example.com"})

    def scenario(self, company, name, **values):
        scenario = self.create_scenario(name=name, company_id=company.id, entry_policy="every_time", **values)
        return scenario

    def enter(self, company, event_type, params=None):
        self.Event._insert_events(
            [
                {
                    "type": event_type,
                    "key": event_type.key,
                    "partner_id": self.shared.id,
                    "company_id": company.id,
                    "params": params or {"total": 1, "items": []},
                }
            ]
        )
        self.dispatch()

    def test_events_of_a_source_reach_only_its_company(self):
        cart, purchase = self.type_cart, self.type_purchase
        scenarios = {}
        for company in (self.company_a, self.company_b):
            letter = "A" if company == self.company_a else "B"
            triggered = self.scenario(company, f"Purchase {letter}", trigger_event_type_id=purchase.id)
            self.add_node(triggered, "wait", wait_amount=1, wait_unit="days")
            exiting = self.scenario(company, f"Exit {letter}", exit_event_type_ids=[(6, 0, purchase.ids)])
            self.add_node(exiting, "wait", wait_amount=1, wait_unit="days")
            waiting = self.scenario(company, f"Wait {letter}")
            self.add_node(waiting, "wait_event", wait_event_type_id=purchase.id, wait_amount=1, wait_unit="days")
            scored = self.scenario(
                company,
                f"Score {letter}",
                trigger_type="score",
                trigger_event_type_id=False,
                score_operator=">=",
                score_threshold=1,
            )
            self.add_node(scored, "wait", wait_amount=1, wait_unit="days")
            for scenario in (triggered, exiting, waiting, scored):
                scenario.action_start()
            self.env["marketing.engagement.rule"].create(
                {"name": f"Rule {letter}", "event_type_id": purchase.id, "points": 2, "company_id": company.id}
            )
            scenarios[letter] = (triggered, exiting, waiting, scored)
            self.enter(company, cart)
        for triggered, exiting, waiting, _scored in scenarios.values():
            self.assertFalse(self.participant_of(triggered, self.shared))
            self.assertEqual(self.participant_of(exiting, self.shared).state, "running")
            self.assertEqual(self.participant_of(waiting, self.shared).step_ids.state, "scheduled")

        response = self.post_events([{"event": "test_purchase", "contact": {"email": "sam@example.com"}}])
        self.assertEqual(response.json()["accepted"], 1, response.text)
        self.dispatch()

        triggered, exiting, waiting, scored = scenarios["A"]
        self.assertEqual(self.participant_of(triggered, self.shared).state, "running", "A's trigger fired")
        self.assertEqual(self.participant_of(exiting, self.shared).state, "exited", "A's exit event")
        self.assertEqual(self.participant_of(waiting, self.shared).step_ids.branch, "yes", "A's wait resumed")
        self.assertTrue(self.participant_of(scored, self.shared), "A's score trigger")
        triggered, exiting, waiting, scored = scenarios["B"]
        self.assertFalse(self.participant_of(triggered, self.shared), "B's trigger did not fire")
        self.assertEqual(self.participant_of(exiting, self.shared).state, "running", "nor B's exit event")
        self.assertEqual(self.participant_of(waiting, self.shared).step_ids.state, "scheduled", "nor B's wait")
        self.assertFalse(self.participant_of(scored, self.shared), "nor B's score trigger")
        logs = self.shared.engagement_log_ids.filtered(lambda log: log.origin == "rule")
        self.assertEqual(logs.mapped("reason"), ["Rule A"], "only A's score rule counted")

    def test_system_events_of_a_company_start_only_its_automations(self):
        imported = self.env.ref("marketing_event_automation.event_type_contacts_imported")
        Automation = self.env["marketing.system.automation"]
        job = [fields.Command.create({"job_type": "send_report"})]
        automation_a = Automation.create(
            {"name": "A", "event_type_id": imported.id, "company_id": self.company_a.id, "job_ids": job}
        )
        automation_b = Automation.create(
            {"name": "B", "event_type_id": imported.id, "company_id": self.company_b.id, "job_ids": job}
        )
        shared = Automation.create(
            {"name": "Shared", "event_type_id": imported.id, "company_id": False, "job_ids": job}
        )
        self.Event._emit("contacts_imported", [{"params": {"count": 1}, "company_id": self.company_a.id}])
        self.dispatch()
        self.assertEqual(len(automation_a.run_ids), 1)
        self.assertEqual(len(shared.run_ids), 1)
        self.assertFalse(automation_b.run_ids, "B's automation ignores A's import")
        self.assertEqual(automation_a.run_ids.company_id, self.company_a)
