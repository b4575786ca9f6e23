import base64
import re

from odoo.addons.mail.tests.common import MockEmail
from odoo.exceptions import AccessError
from odoo.exceptions import UserError
from odoo.tests import new_test_user
from odoo.tests import tagged
from odoo.tools import mute_logger

from ..models.marketing_coupon_list import COUPON_ALPHABET
from .common import MarketingAutomationCommon
from .scenario_common import ScenarioCommon

CODE_EMAIL_BODY = "<p>Your code: <strong t-out='object.marketing_coupon_code'/></p>"


class CouponCommon(ScenarioCommon, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.CouponList = cls.env["marketing.coupon.list"]
        cls.Coupon = cls.env["marketing.coupon"]

    def make_list(self, codes=(), **values):
        coupon_list = self.CouponList.create({"name": values.pop("name", "Spring"), **values})
        coupon_list._insert_codes(list(codes))
        return coupon_list

    def contacts(self, count, label="c"):
        return self.env["res.partner"].create(
            [{"name": f"{label} {index}", "email": f"{label}{index}@example.org"} for index in range(count)]
        )

    def coupon_scenario(self, coupon_list, **node_values):
        scenario = self.create_scenario(name="Coupons", trigger_type="now", trigger_event_type_id=False)
        node = self.add_node(scenario, "coupon", name="Give", coupon_list_id=coupon_list.id, **node_values)
        email = self.add_node(scenario, "email", node, name="Send code")
        email.mailing_id.write({"subject": "Your gift", "body_html": CODE_EMAIL_BODY})
        return scenario, node, email

    def run_for(self, scenario, partners):
        scenario.action_start()
        scenario._enroll_partners(partners.ids)
        with self.mock_mail_gateway():
            self.advance()


@tagged("post_install", "-at_install")
class TestCouponImport(CouponCommon):
    """A marketer imports codes from a CSV file or pasted text: bad rows are rejected with their reason."""

    def import_codes(self, coupon_list, user=None, **values):
        Wizard = self.env["marketing.coupon.import.wizard"].with_user(user or self.marketing_user)
        wizard = Wizard.create({"list_id": coupon_list.id, **values})
        wizard.action_import()
        return wizard

    def test_bad_rows_are_rejected_with_their_reason_and_good_ones_kept(self):
        coupon_list = self.make_list(["KNOWN-1"])
        csv_text = "code,value\nGOOD-1,10%\nGOOD-2,10%\n\nBAD CODE,10%\nGOOD-1,again\nKNOWN-1,old\n,empty\n" + (
            "X" * 70 + ",long\n"
        )
        wizard = self.import_codes(
            coupon_list,
            import_file=base64.b64encode(csv_text.encode()),
            import_filename="codes.csv",
            pasted_codes="PASTE-1, PASTE-2\n<script>\nPASTE-1",
        )
        self.assertEqual(wizard.imported_count, 4)
        self.assertEqual(
            sorted(coupon_list.coupon_ids.mapped("code")),
            ["GOOD-1", "GOOD-2", "KNOWN-1", "PASTE-1", "PASTE-2"],
        )
        rejected = wizard.rejected_rows.splitlines()
        self.assertEqual(wizard.rejected_count, 7, rejected)
        expected = [
            "file row 5: only letters, digits, '-' and '_' are allowed",
            "file row 6: the code GOOD-1 is given twice",
            "file row 8: the code is empty",
            "file row 9: the code is longer than 64 characters",
            "pasted line 2: only letters, digits",
            "pasted line 3: the code PASTE-1 is given twice",
            "file row 7: the code KNOWN-1 is already in the list",
        ]
        for line in expected:
            self.assertTrue(any(row.startswith(line) for row in rejected), f"{line!r} not in {rejected}")
        self.assertEqual(coupon_list.available_count, 5)

    def test_codes_in_a_column_named_code_and_nothing_given(self):
        coupon_list = self.make_list()
        wizard = self.import_codes(
            coupon_list, import_file=base64.b64encode(b"order;code\n1;AA-1\n2;AA-2\n"), import_filename="c.csv"
        )
        self.assertEqual((wizard.imported_count, wizard.rejected_count), (2, 0))
        self.assertEqual(sorted(coupon_list.coupon_ids.mapped("code")), ["AA-1", "AA-2"])
        with self.assertRaisesRegex(UserError, "Codes: give a CSV file or paste codes"):
            self.import_codes(coupon_list)

    def test_another_company_list_is_out_of_reach(self):
        other_company = self.env["res.company"].create({"name": "Other shop"})
        other_list = self.make_list(["THEIRS-1"], name="Theirs", company_id=other_company.id)
        with self.assertRaises(AccessError):
            self.import_codes(other_list, pasted_codes="MINE-1")
        with self.assertRaises(AccessError):
            other_list.with_user(self.marketing_user)._insert_codes(["MINE-2"])
        with self.assertRaises(AccessError):
            self.Coupon.with_user(self.marketing_user).browse(other_list.coupon_ids.ids).read(["code"])
        self.assertEqual(other_list.coupon_ids.mapped("code"), ["THEIRS-1"])

    def test_salesperson_has_no_access(self):
        coupon_list = self.make_list(["S-1"])
        with self.assertRaises(AccessError):
            coupon_list.with_user(self.sales_user).read(["name"])
        with self.assertRaises(AccessError):
            self.import_codes(coupon_list, user=self.sales_user, pasted_codes="S-2")


@tagged("post_install", "-at_install")
class TestCouponGeneration(CouponCommon):
    def test_codes_follow_the_pattern(self):
        coupon_list = self.make_list(code_prefix="SPRING-", code_length=8)
        coupon_list._generate(500)
        pattern = re.compile(f"SPRING-[{COUPON_ALPHABET}]{{8}}")
        codes = coupon_list.coupon_ids.mapped("code")
        self.assertEqual(len(codes), 500)
        self.assertTrue(all(pattern.fullmatch(code) for code in codes))
        for look_alike in "0O1IL":
            self.assertNotIn(look_alike, COUPON_ALPHABET)

    def test_100000_codes_are_unique_even_when_draws_collide(self):
        # 4 characters of a 25-letter alphabet: 390,625 codes. Drawing 100,000
        # of them collides thousands of times (birthday bound), so the list
        # only reaches 100,000 codes if collisions are drawn again.
        coupon_list = self.make_list(code_length=4)
        self.assertEqual(coupon_list._generate(100_000), 100_000)
        self.env.cr.execute(
            "SELECT count(*), count(DISTINCT code) FROM marketing_coupon WHERE list_id = %s", [coupon_list.id]
        )
        self.assertEqual(self.env.cr.fetchone(), (100_000, 100_000))
        coupon_list.invalidate_recordset()
        self.assertEqual(coupon_list.available_count, 100_000)

    def test_generation_limits(self):
        coupon_list = self.make_list()
        with self.assertRaisesRegex(UserError, "Codes to Generate: between 1 and"):
            coupon_list._generate(0)
        with self.assertRaisesRegex(Exception, "Random Part Length: at least 4"):
            coupon_list.code_length = 3


@tagged("post_install", "-at_install")
class TestCouponHandout(CouponCommon):
    def test_each_contact_gets_its_own_code_in_the_email(self):
        coupon_list = self.make_list(["CODE-A", "CODE-B", "CODE-C"], user_id=self.marketing_user.id)
        scenario, node, email = self.coupon_scenario(coupon_list)
        partners = self.contacts(2)
        self.run_for(scenario, partners)
        participants = scenario.participant_ids
        codes = participants.mapped("coupon_code")
        self.assertEqual(len(set(codes)), 2)
        for participant in participants:
            coupon = participant.coupon_id
            self.assertEqual((coupon.partner_id, coupon.state), (participant.partner_id, "given"))
            self.assertEqual((coupon.scenario_id, coupon.node_id), (scenario, node))
            step = self.steps_of(participant, node)
            self.assertEqual((step.state, step.result), ("done", coupon.code))
            trace = self.steps_of(participant, email).trace_id
            mail = self.env["mail.mail"].sudo().search([("mailing_trace_ids", "in", trace.ids)])
            self.assertIn(f"<strong>{coupon.code}</strong>", mail.body_html)
        self.assertEqual((coupon_list.available_count, coupon_list.given_count), (1, 2))
        self.assertEqual((node.coupon_given_count, scenario.coupon_given_count), (2, 2))

    def test_a_contact_holding_a_code_gets_it_again_unless_told_otherwise(self):
        coupon_list = self.make_list(["R-1", "R-2", "R-3"])
        first, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(first, self.partner)
        held = self.participant_of(first, self.partner).coupon_id
        again, _node, _email = self.coupon_scenario(coupon_list)
        self.run_for(again, self.partner)
        self.assertEqual(self.participant_of(again, self.partner).coupon_id, held)
        fresh, _node, _email = self.coupon_scenario(coupon_list, coupon_same_again=False)
        self.run_for(fresh, self.partner)
        other = self.participant_of(fresh, self.partner).coupon_id
        self.assertTrue(other)
        self.assertNotEqual(other, held)
        self.assertEqual(coupon_list.available_count, 1)

    def test_an_empty_list_skips_with_no_code_left_and_tells_its_owner(self):
        coupon_list = self.make_list(["LAST-1"], user_id=self.marketing_user.id)
        scenario, node, email = self.coupon_scenario(coupon_list)
        partners = self.contacts(3, "empty")
        self.run_for(scenario, partners)
        steps = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(sorted(steps.mapped("state")), ["done", "skipped", "skipped"])
        self.assertEqual(set(steps.filtered(lambda step: step.state == "skipped").mapped("result")), {"No code left"})
        self.assertIn("No code left: 2", node.skipped_reasons)
        activities = self.env["mail.activity"].search(
            [("res_model", "=", "marketing.coupon.list"), ("res_id", "=", coupon_list.id)]
        )
        self.assertEqual(len(activities), 1)
        self.assertEqual(activities.user_id, self.marketing_user)
        self.assertIn("is empty", activities.summary)
        # The contacts without code still go on (a skip is not an end): the email
        # follows and shows no code.
        self.assertEqual(len(self.Step.search([("node_id", "=", email.id)])), 3)

    def test_an_expired_list_hands_nothing_out(self):
        coupon_list = self.make_list(["OLD-1"], expiry_date="2020-01-01")
        scenario, node, _email = self.coupon_scenario(coupon_list)
        self.run_for(scenario, self.partner)
        step = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual((step.state, step.result), ("skipped", "Coupon list expired"))
        self.assertEqual((coupon_list.expired_count, coupon_list.available_count), (1, 0))
        self.assertEqual(coupon_list.coupon_ids.status, "expired")

    def test_start_checks_the_list_and_its_company(self):
        scenario = self.create_scenario(name="No list", trigger_type="now", trigger_event_type_id=False)
        self.add_node(scenario, "coupon", name="Give")
        with self.assertRaisesRegex(UserError, "Give: choose the coupon list"):
            scenario.action_start()
        other_company = self.env["res.company"].create({"name": "Elsewhere"})
        theirs = self.make_list(["T-1"], name="Theirs", company_id=other_company.id)
        scenario.node_ids.coupon_list_id = theirs
        with self.assertRaisesRegex(UserError, "Give: the coupon list belongs to another company"):
            scenario.action_start()

    def test_a_responsible_without_rights_on_the_list_hands_out_nothing(self):
        coupon_list = self.make_list(["NOPE-1"])
        scenario, node, _email = self.coupon_scenario(coupon_list)
        scenario.user_id = self.sales_user  # no marketing rights: may not change the list by hand
        with self.assertRaisesRegex(
            UserError, r"Give: mea_salesman \(base.group_user\) may not hand out the codes of Spring"
        ):
            scenario.action_start()
        # Responsible changed once running: the engine checks again before each batch.
        scenario.user_id = self.env.user
        scenario.action_start()
        scenario.user_id = self.sales_user
        scenario._enroll_partners(self.partner.ids)
        with mute_logger("odoo.addons.marketing_event_automation.models.marketing_scenario_step"):
            self.advance()
        step = self.Step.search([("node_id", "=", node.id)])
        self.assertEqual(step.state, "error")
        self.assertIn("may not hand out the codes of Spring", step.result)
        self.assertEqual(coupon_list.coupon_ids.state, "available")

    def test_flow_card_shows_the_list_and_redemptions(self):
        coupon_list = self.make_list(["F-1", "F-2"])
        scenario, node, _email = self.coupon_scenario(coupon_list)
        self.run_for(scenario, self.partner)
        [card] = [card for card in node._flow_cards() if card["id"] == node.id]
        self.assertEqual(card["icon"], "fa-ticket")
        self.assertEqual(card["description"], "Spring (1 left)")
        self.assertIn(("redeemed", 0), [(stat["name"], stat["value"]) for stat in card["stats"]])
        self.assertIn(("processed", 1), [(stat["name"], stat["value"]) for stat in card["stats"]])


@tagged("post_install", "-at_install")
class TestCouponHandoutQueries(CouponCommon):
    """One hand-out batch costs the same queries whatever its size."""

    def batch_queries(self, size, label):
        coupon_list = self.make_list(name=label, code_length=8)
        coupon_list._generate(size + 5)
        held = self.contacts(1, f"{label}-held")
        coupon_list._claim(held.ids)  # a contact holding a code already: it is found again
        scenario = self.create_scenario(name=label, trigger_type="now", trigger_event_type_id=False)
        self.add_node(scenario, "coupon", coupon_list_id=coupon_list.id)
        scenario.action_start()
        scenario._enroll_partners((self.contacts(size - 1, label) | held).ids)
        self.env.flush_all()
        self.env.invalidate_all()
        before = self.cr.sql_log_count
        self.assertEqual(self.Step._cron_advance(), size)
        self.env.flush_all()
        queries = self.cr.sql_log_count - before
        self.assertEqual(set(scenario.participant_ids.step_ids.mapped("state")), {"done"})
        self.assertEqual(len(set(scenario.participant_ids.mapped("coupon_id"))), size)
        return queries

    def test_hand_out_queries_do_not_grow_with_the_batch(self):
        self.batch_queries(3, "warm")
        queries_10 = self.batch_queries(10, "ten")
        queries_100 = self.batch_queries(100, "hundred")
        self.assertLessEqual(queries_100, queries_10 + 2, f"{queries_10} then {queries_100} queries")


@tagged("post_install", "-at_install")
class TestCouponAccessMarketer(MarketingAutomationCommon):
    def test_marketer_creates_and_generates_a_list(self):
        coupon_list = self.env["marketing.coupon.list"].with_user(self.marketing_user).create({"name": "Mine"})
        coupon_list.generate_count = 20
        coupon_list.action_generate()
        self.assertEqual(coupon_list.total_count, 20)
        self.assertEqual(coupon_list.company_id, self.company)
        self.assertEqual(coupon_list.user_id, self.marketing_user)
        with self.assertRaises(AccessError):
            coupon_list.coupon_ids[:1].write({"code": "CHANGED"})

    def test_user_of_another_company_does_not_see_the_list(self):
        other_company = self.env["res.company"].create({"name": "Far away"})
        outsider = new_test_user(
            self.env,
            login="mea_outsider",
            company_id=other_company.id,
            company_ids=[(6, 0, other_company.ids)],
            groups="base.group_user,marketing_event_automation.group_marketing_automation_user",
        )
        coupon_list = self.env["marketing.coupon.list"].create({"name": "Ours"})
        coupon_list._generate(5)
        self.assertFalse(self.env["marketing.coupon.list"].with_user(outsider).search([("id", "=", coupon_list.id)]))
        self.assertFalse(self.env["marketing.coupon"].with_user(outsider).search([("list_id", "=", coupon_list.id)]))


@tagged("post_install", "-at_install")
class TestCouponWithoutLoyalty(MarketingAutomationCommon):
    """Without Odoo's Loyalty app (the main test run), the bridge is simply not offered."""

    def test_only_own_codes_without_loyalty(self):
        self.assertNotIn("loyalty.program", self.env)
        CouponList = self.env["marketing.coupon.list"]
        self.assertEqual([key for key, _label in CouponList._selection_source()], ["codes"])
        self.assertEqual(CouponList._selection_loyalty_program(), [])
        with self.assertRaisesRegex(UserError, "no loyalty program to take codes from"):
            CouponList.create({"name": "Plain"})._loyalty_program()
