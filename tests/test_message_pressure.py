from datetime import datetime
from datetime import timedelta

from freezegun import freeze_time

from odoo.addons.sms.tests.common import SMSCase
from odoo.exceptions import ValidationError
from odoo.tests import tagged

from .scenario_common import ScenarioCommon
from .test_scenario_performance import CACHE_SLACK

# A Thursday in winter: Brussels is UTC+1, New York UTC-5, Tokyo UTC+9.
WINTER_NIGHT = datetime(2026, 1, 15, 22, 30)  # 23:30 in Brussels, 17:30 in New York, 07:30 the 16th in Tokyo


class MessageRulesCommon(ScenarioCommon):
    def message_scenario(self, name, node_type="email", **values):
        scenario = self.create_scenario(
            name=name, trigger_type="now", trigger_event_type_id=False, entry_policy="every_time", **values
        )
        node = self.add_node(scenario, node_type)
        if node_type == "email":
            node.mailing_id.write({"subject": name, "body_html": "<p>Hello</p>"})
        else:
            node.mailing_id.write({"body_plaintext": name, "sms_allow_unsubscribe": False})
        return scenario, node

    def start(self, *scenarios):
        for scenario in scenarios:
            scenario.action_start()

    def enter_at(self, moment, scenario, partners):
        """``partners`` enter ``scenario`` at ``moment`` and the engine runs what is due then."""
        with freeze_time(moment):
            scenario._enroll_partners(partners.ids)
            return self.advance()

    def step_of(self, node, partner):
        return self.Step.search([("node_id", "=", node.id), ("partner_id", "=", partner.id)], order="id desc", limit=1)

    def set_email_cap(self, count, days, mass_mailings=False):
        self.company.write(
            {
                "marketing_email_cap_enabled": True,
                "marketing_email_cap_count": count,
                "marketing_email_cap_days": days,
                "marketing_cap_mass_mailings": mass_mailings,
            }
        )


@tagged("post_install", "-at_install")
class TestFrequencyCap(MessageRulesCommon):
    """At most N marketing emails per contact and period, across every scenario of the company."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = cls.env["res.partner"].create({"name": "Alice Cap", "email": "alice.cap@example.org"})
        cls.bob_cap = cls.env["res.partner"].create({"name": "Bob Cap", "email": "bob.cap@example.org"})

    def test_cap_counts_every_scenario_and_delays_to_the_next_allowed_moment(self):
        self.set_email_cap(2, 7)
        monday = datetime(2026, 3, 2, 10, 0)
        welcome, welcome_node = self.message_scenario("Welcome")
        promo, promo_node = self.message_scenario("Promo")
        digest, digest_node = self.message_scenario("Digest")
        self.start(welcome, promo, digest)
        self.enter_at(monday, welcome, self.alice)
        self.enter_at(monday + timedelta(days=1), promo, self.alice)
        self.assertEqual(
            (self.step_of(welcome_node, self.alice) | self.step_of(promo_node, self.alice)).mapped("state"),
            ["done", "done"],
        )

        self.enter_at(monday + timedelta(days=2), digest, self.alice | self.bob_cap)
        capped = self.step_of(digest_node, self.alice)
        self.assertEqual(capped.state, "scheduled")
        self.assertEqual(capped.scheduled_at, monday + timedelta(days=7), "when the oldest of the two leaves the week")
        self.assertIn("Frequency cap: 2 emails per 7 days reached", capped.result)
        self.assertIn("delayed until", capped.result)
        self.assertFalse(capped.trace_id, "not sent")
        self.assertEqual(self.step_of(digest_node, self.bob_cap).state, "done", "the cap is per contact")

        self.assertEqual(self.advance_at(monday + timedelta(days=7) - timedelta(minutes=1)), 0)
        self.assertEqual(self.advance_at(monday + timedelta(days=7)), 1)
        self.assertEqual(capped.state, "done")
        self.assertEqual(capped.result, "Sent")
        self.assertEqual(capped.attempt, 0, "waiting for the cap is no failed attempt")

    def test_two_scenarios_in_one_batch_send_one_message(self):
        self.set_email_cap(1, 7)
        first, first_node = self.message_scenario("First")
        second, second_node = self.message_scenario("Second")
        self.start(first, second)
        with freeze_time(WINTER_NIGHT):
            first._enroll_partners(self.alice.ids)
            second._enroll_partners(self.alice.ids)
            self.assertEqual(self.Step._cron_advance(), 2, "both in the same batch")
        steps = self.step_of(first_node, self.alice) | self.step_of(second_node, self.alice)
        self.assertEqual(sorted(steps.mapped("state")), ["done", "scheduled"])
        held = steps.filtered(lambda step: step.state == "scheduled")
        self.assertEqual(held.scheduled_at, WINTER_NIGHT + timedelta(days=7))
        self.assertIn("Frequency cap", held.result)

    def test_skip_policy_skips_the_message_with_the_reason_and_the_run_goes_on(self):
        self.set_email_cap(1, 7)
        news, _news_node = self.message_scenario("News")
        reminder, reminder_node = self.message_scenario("Reminder", capped_message_policy="skip")
        tag = self.add_node(reminder, "tag_add", reminder_node, tag_ids=[(6, 0, self.tag_vip.ids)])
        self.start(news, reminder)
        self.enter_at(WINTER_NIGHT, news, self.alice)
        self.enter_at(WINTER_NIGHT + timedelta(hours=1), reminder, self.alice)
        skipped = self.step_of(reminder_node, self.alice)
        self.assertEqual(skipped.state, "skipped")
        self.assertEqual(skipped.result, "Frequency cap: 1 emails per 7 days reached")
        self.assertEqual(self.step_of(tag, self.alice).state, "done", "the contact went on")
        self.assertIn(self.tag_vip, self.alice.category_id)
        self.assertEqual(self.participant_of(reminder, self.alice).state, "completed")

    def test_emails_do_not_count_against_the_sms_cap(self):
        self.company.write({"marketing_sms_cap_enabled": True, "marketing_sms_cap_count": 1})
        self.alice.phone = "+32 470 11 22 33"
        news, _news_node = self.message_scenario("News")
        text, text_node = self.message_scenario("Text", node_type="sms")
        self.start(news, text)
        self.enter_at(WINTER_NIGHT, news, self.alice)
        self.enter_at(WINTER_NIGHT + timedelta(hours=1), text, self.alice)
        self.assertEqual(self.step_of(text_node, self.alice).state, "done")
        self.enter_at(WINTER_NIGHT + timedelta(hours=2), text, self.alice)
        self.assertIn("Frequency cap: 1 SMS per 7 days reached", self.step_of(text_node, self.alice).result)

    def mass_mailing_traces(self):
        """A newsletter the contacts got yesterday, sent to a contact, to a mailing contact, and one canceled."""
        mailing = self.env["mailing.mailing"].create(
            {"subject": "Newsletter", "mailing_type": "mail", "body_html": "<p>News</p>"}
        )
        subscriber = self.env["mailing.contact"].create({"name": "Bob", "email": self.bob_cap.email})
        carol = self.env["res.partner"].create({"name": "Carol Cap", "email": "carol.cap@example.org"})
        yesterday = WINTER_NIGHT - timedelta(days=1)
        common = {"mass_mailing_id": mailing.id, "trace_type": "mail", "sent_datetime": yesterday}
        self.env["mailing.trace"].create(
            [
                {**common, "model": "res.partner", "res_id": self.alice.id, "email": self.alice.email},
                {**common, "model": "mailing.contact", "res_id": subscriber.id, "email": self.bob_cap.email},
                {
                    **common,
                    "model": "res.partner",
                    "res_id": carol.id,
                    "email": carol.email,
                    "trace_status": "cancel",
                },
            ]
        )
        return self.alice | self.bob_cap | carol

    def test_mass_mailings_count_with_the_setting(self):
        self.set_email_cap(1, 7, mass_mailings=True)
        partners = self.mass_mailing_traces()
        scenario, node = self.message_scenario("After the newsletter")
        self.start(scenario)
        self.enter_at(WINTER_NIGHT, scenario, partners)
        states = [self.step_of(node, partner).state for partner in partners]
        self.assertEqual(states, ["scheduled", "scheduled", "done"], "the canceled newsletter was never received")
        self.assertEqual(self.step_of(node, self.bob_cap).scheduled_at, WINTER_NIGHT + timedelta(days=6))

    def test_mass_mailings_do_not_count_without_the_setting(self):
        self.set_email_cap(1, 7)
        partners = self.mass_mailing_traces()
        scenario, node = self.message_scenario("After the newsletter")
        self.start(scenario)
        self.enter_at(WINTER_NIGHT, scenario, partners)
        self.assertEqual([self.step_of(node, partner).state for partner in partners], ["done"] * 3)

    def test_test_runs_are_never_capped(self):
        self.set_email_cap(1, 7)
        news, _news_node = self.message_scenario("News")
        self.start(news)
        self.enter_at(WINTER_NIGHT, news, self.alice)
        with freeze_time(WINTER_NIGHT + timedelta(hours=1)):
            participant = self.env["marketing.scenario.test.wizard"]._run(news, self.alice)
        self.assertEqual(participant.step_ids.mapped("state"), ["done"])
        self.assertEqual(participant.step_ids.result, "Sent")


@tagged("post_install", "-at_install")
class TestQuietHours(MessageRulesCommon, SMSCase):
    """No message in the company's quiet hours of the channel, in the contact's day."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company.write(
            {"marketing_sms_quiet_enabled": True, "marketing_sms_quiet_start": 21.0, "marketing_sms_quiet_end": 8.0}
        )
        cls.brussels, cls.new_york, cls.somewhere = cls.env["res.partner"].create(
            [
                {
                    "name": "In Brussels",
                    "email": "be@example.org",
                    "phone": "+32 470 10 00 01",
                    "tz": "Europe/Brussels",
                },
                {
                    "name": "In New York",
                    "email": "ny@example.org",
                    "phone": "+32 470 10 00 02",
                    "tz": "America/New_York",
                },
                {"name": "No timezone", "email": "tz@example.org", "phone": "+32 470 10 00 03", "tz": False},
            ]
        )
        cls.everybody = cls.brussels | cls.new_york | cls.somewhere

    def test_sms_due_at_night_waits_for_the_contacts_morning(self):
        scenario, sms = self.message_scenario("Night", node_type="sms", timezone="Asia/Tokyo")
        email = self.add_node(scenario, "email")
        email.mailing_id.write({"subject": "Night", "body_html": "<p>Hello</p>"})
        self.start(scenario)
        with self.mockSMSGateway():
            self.enter_at(WINTER_NIGHT, scenario, self.everybody)
        self.assertEqual(self.step_of(sms, self.new_york).state, "done", "17:30 in New York")
        at_night = self.step_of(sms, self.brussels)
        self.assertEqual(at_night.state, "scheduled")
        self.assertEqual(at_night.scheduled_at, datetime(2026, 1, 16, 7, 0), "08:00 in Brussels")
        self.assertIn("Quiet hours 21:00-08:00 (Europe/Brussels): delayed until", at_night.result)
        early = self.step_of(sms, self.somewhere)
        self.assertEqual(early.scheduled_at, datetime(2026, 1, 15, 23, 0), "08:00 in Tokyo, the scenario's timezone")
        self.assertEqual(
            [self.step_of(email, partner).state for partner in self.everybody],
            ["done"] * 3,
            "emails have no quiet hours",
        )

        with self.mockSMSGateway():
            self.assertEqual(self.advance_at(datetime(2026, 1, 15, 23, 0)), 1)
            self.assertEqual(self.advance_at(datetime(2026, 1, 16, 7, 0)), 1)
        self.assertEqual((at_night | early).mapped("result"), ["Sent", "Sent"])

    def test_send_window_of_a_wait_then_quiet_hours(self):
        scenario = self.create_scenario(name="Window", trigger_type="now", trigger_event_type_id=False)
        wait = self.add_node(
            scenario,
            "wait",
            wait_amount=0,
            wait_unit="minutes",
            window_enabled=True,
            window_start=6.0,
            window_end=10.0,
        )
        sms = self.add_node(scenario, "sms", wait)
        sms.mailing_id.write({"body_plaintext": "Good morning", "sms_allow_unsubscribe": False})
        self.start(scenario)
        self.enter_at(WINTER_NIGHT, scenario, self.brussels)
        self.assertEqual(self.step_of(wait, self.brussels).scheduled_at, datetime(2026, 1, 16, 5, 0), "06:00 there")
        with self.mockSMSGateway():
            self.advance_at(datetime(2026, 1, 16, 5, 0))
        held = self.step_of(sms, self.brussels)
        self.assertEqual((held.state, held.scheduled_at), ("scheduled", datetime(2026, 1, 16, 7, 0)))
        with self.mockSMSGateway():
            self.advance_at(datetime(2026, 1, 16, 7, 0))
        self.assertEqual(held.state, "done")

    def test_a_cap_released_in_quiet_hours_waits_for_their_end(self):
        self.set_email_cap(1, 1)
        news, news_node = self.message_scenario("News")
        self.start(news)
        self.enter_at(datetime(2026, 1, 15, 20, 30), news, self.brussels)  # 21:30 in Brussels
        self.company.write(
            {
                "marketing_email_quiet_enabled": True,
                "marketing_email_quiet_start": 21.0,
                "marketing_email_quiet_end": 8.0,
            }
        )
        self.enter_at(datetime(2026, 1, 16, 10, 0), news, self.brussels)
        held = self.step_of(news_node, self.brussels)
        self.assertEqual(held.scheduled_at, datetime(2026, 1, 17, 7, 0), "the cap frees it at 21:30, quiet until 08:00")
        self.assertIn("Frequency cap: 1 emails per 1 days reached; Quiet hours 21:00-08:00", held.result)


@tagged("post_install", "-at_install")
class TestMessageRulesQueries(MessageRulesCommon):
    """Caps and quiet hours cost the same queries for a batch of 10 or 100 messages."""

    def batch_queries(self, size, label):
        partners = self.env["res.partner"].create(
            [
                {
                    "name": f"{label} {i}",
                    "email": f"{label}{i}@example.org",
                    "tz": "Europe/Brussels" if i % 3 == 0 else "America/New_York",
                }
                for i in range(size)
            ]
        )
        earlier, _earlier_node = self.message_scenario(f"{label} earlier")
        scenario, node = self.message_scenario(label)
        self.start(earlier, scenario)
        # The afternoon before, outside the quiet hours of both cities.
        self.enter_at(datetime(2026, 1, 14, 15, 0), earlier, partners.filtered(lambda partner: partner.id % 2))
        with freeze_time(WINTER_NIGHT):
            scenario._enroll_partners(partners.ids)
            self.env.flush_all()
            self.env.invalidate_all()
            before = self.cr.sql_log_count
            self.assertEqual(self.Step._cron_advance(), size)
            queries = self.cr.sql_log_count - before
        states = set(self.Step.search([("node_id", "=", node.id)]).mapped("state"))
        self.assertEqual(states, {"done", "scheduled"}, "some sent, some held")
        return queries

    def test_batch_queries_do_not_grow_with_the_batch(self):
        self.set_email_cap(1, 7, mass_mailings=True)
        self.company.write({"marketing_email_quiet_enabled": True})
        self.batch_queries(3, "warm")
        queries_10 = self.batch_queries(10, "ten")
        queries_100 = self.batch_queries(100, "hundred")
        self.assertLessEqual(queries_100, queries_10 + CACHE_SLACK, f"{queries_10} then {queries_100} queries")


@tagged("post_install", "-at_install")
class TestMessageRulesSettings(MessageRulesCommon):
    """The settings that configure the rules, their checks, and the canvas cards that show them."""

    def test_settings_write_the_company_rules(self):
        self.env["res.config.settings"].create(
            {
                "marketing_sms_cap_enabled": True,
                "marketing_sms_cap_count": 2,
                "marketing_sms_cap_days": 1,
                "marketing_sms_quiet_enabled": True,
                "marketing_sms_quiet_start": 22.5,
                "marketing_sms_quiet_end": 7.0,
            }
        ).execute()
        rules = self.company._marketing_message_rules("sms")
        self.assertEqual(rules["cap"], (2, timedelta(days=1)))
        self.assertEqual(rules["quiet"], (22.5, 7.0))
        self.assertEqual(
            self.company._marketing_message_rules("email"), {"cap": None, "quiet": None, "mass_mailings": False}
        )

    def test_rules_that_make_no_sense_are_refused_with_the_setting_named(self):
        for values, message in (
            (
                {"marketing_email_cap_enabled": True, "marketing_email_cap_count": 0},
                "Email Frequency Cap: give a number of messages above 0.",
            ),
            (
                {"marketing_sms_cap_enabled": True, "marketing_sms_cap_days": 0},
                "SMS Frequency Cap: give a period of at least 1 day.",
            ),
            (
                {"marketing_sms_quiet_enabled": True, "marketing_sms_quiet_start": 8.0, "marketing_sms_quiet_end": 8.0},
                "SMS Quiet Hours: give two different times of day between 00:00 and 23:59.",
            ),
            (
                {"marketing_email_quiet_enabled": True, "marketing_email_quiet_end": 25.0},
                "Email Quiet Hours: give two different times of day between 00:00 and 23:59.",
            ),
        ):
            with self.subTest(values=values), self.assertRaises(ValidationError) as refused:
                self.company.write(values)
            self.assertEqual(str(refused.exception), message)

    def test_canvas_cards_show_the_rules_of_each_message(self):
        self.set_email_cap(3, 7)
        self.company.write({"marketing_email_quiet_enabled": True})
        scenario, email = self.message_scenario("Cards", capped_message_policy="skip")
        sms = self.add_node(scenario, "sms", email)
        tag = self.add_node(scenario, "tag_add", sms, tag_ids=[(6, 0, self.tag_vip.ids)])
        cards = {card["id"]: card for card in scenario.with_user(self.marketing_user).get_flow_data()["nodes"]}
        badges = cards[email.id]["badges"]
        self.assertEqual([badge["name"] for badge in badges], ["cap", "quiet"])
        self.assertEqual(badges[0]["label"], "Max 3 / 7 days")
        self.assertIn("skipped", badges[0]["title"])
        self.assertEqual(badges[1]["label"], "Quiet 21:00-08:00")
        self.assertEqual(cards[sms.id]["badges"], [], "no SMS rule set")
        self.assertEqual(cards[tag.id]["badges"], [])
