from odoo.exceptions import ValidationError
from odoo.tests import tagged

from ..utils.params_filter import ParamsFilterError
from ..utils.params_filter import format_conditions
from ..utils.params_filter import normalize_conditions
from ..utils.params_filter import params_match
from ..utils.params_filter import parse_params_filter
from .common import MarketingAutomationCommon


@tagged("post_install", "-at_install")
class TestParamsFilter(MarketingAutomationCommon):
    def test_parse_and_match(self):
        conditions = parse_params_filter('total > 100 and category == "shoes"')
        self.assertEqual(
            conditions,
            [
                {"path": "total", "operator": ">", "value": 100, "type": "number"},
                {"path": "category", "operator": "==", "value": "shoes", "type": "string"},
            ],
        )
        cases = [
            ({"total": 150, "category": "shoes"}, True),
            ({"total": "120.5", "category": "shoes"}, True),  # coerced to the condition's number type
            ({"total": 100, "category": "shoes"}, False),
            ({"total": 150, "category": "bags"}, False),
            ({"category": "shoes"}, False),  # a missing path satisfies nothing
            ({"total": None, "category": "shoes"}, False),
            ({"total": "a lot", "category": "shoes"}, False),
            ({"total": True, "category": "shoes"}, False),  # a boolean is not a number
        ]
        for params, expected in cases:
            with self.subTest(params=params):
                self.assertEqual(params_match(conditions, params), expected)
        self.assertTrue(params_match([], {"anything": 1}), "no condition: every event matches")
        self.assertEqual(parse_params_filter("   "), [])

    def test_operators_paths_and_lists(self):
        params = {
            "total": 59.9,
            "coupon": "WELCOME10",
            "gift": False,
            "tags": ["vip", "newsletter"],
            "customer": {"city": "Liège", "zip": 4000},
            "items": [{"sku": "SHOE-1", "quantity": 1}, {"sku": "BAG-2", "quantity": 3}],
        }
        cases = [
            ("total >= 59.9", True),
            ("total < 59.9", False),
            ("total <= 60 and total != 10", True),
            ('coupon contains "welcome"', True),  # case-insensitive
            ('coupon != "WELCOME10"', False),
            ("gift == false", True),
            ('gift == "no"', False),  # compared as strings: false is "false"
            ('tags contains "vip"', True),
            ('tags == "newsletter"', True),
            ('tags != "vip"', False),  # negative operators: none of the values
            ('customer.city == "Liège"', True),
            ('customer.zip == "4000"', True),  # 4000 compared as the string "4000"
            ('items[].sku == "BAG-2"', True),
            ("items[].quantity > 2", True),
            ("items[].quantity > 3", False),
            ('items[].sku in ["SHOE-1", "HAT-9"]', True),
            ('items[].sku not in ["SHOE-1", "BAG-2"]', False),
            ('coupon not in ["SUMMER"]', True),
            ("coupon exists and referrer not exists", True),
            ("referrer exists", False),
            ('referrer != "x"', False),
            ("customer.missing.deeper == 1", False),
            ("tags[] contains 'NEWS'", True),
        ]
        for text, expected in cases:
            with self.subTest(text=text):
                self.assertEqual(params_match(parse_params_filter(text), params), expected)

    def test_learned_structure_types_coerce_values(self):
        structure = {"total": "number", "zip": "string", "paid": "boolean", "items[].quantity": "integer"}
        conditions = parse_params_filter(
            'total > "100" and zip == 1000 and paid == "true" and items[].quantity >= "2"', structure
        )
        self.assertEqual(
            [(condition["value"], condition["type"]) for condition in conditions],
            [(100, "number"), ("1000", "string"), (True, "boolean"), (2, "number")],
        )
        self.assertTrue(
            params_match(conditions, {"total": 120, "zip": "1000", "paid": True, "items": [{"quantity": 2}]})
        )
        with self.assertRaisesRegex(ParamsFilterError, r"total is a number in the learned structure, \"lots\""):
            parse_params_filter('total > "lots"', structure)
        with self.assertRaisesRegex(ParamsFilterError, "paid is a boolean"):
            parse_params_filter("paid == 3", structure)

    def test_bad_filters_name_the_problem(self):
        cases = [
            ("total >", "ends too early"),
            ("total = 3", "use == to compare"),
            ("total > 1 or x == 2", "only 'and' joins conditions"),
            ("total between 1", "expected an operator"),
            ("== 3", "expected a parameter name"),
            ("total > abc", "expected a value"),
            ("x in [1, 'a']", "mix number and string"),
            ("x in 3", "expected a list"),
            ("flag >= true", "not booleans"),
            ("__import__('os') == 1", "unexpected character"),
            ("x == 1 " + "and x == 1 " * 25, "at most 20 conditions"),
        ]
        for text, message in cases:
            with self.subTest(text=text), self.assertRaisesRegex(ParamsFilterError, message):
                parse_params_filter(text)

    def test_json_conditions_and_text_round_trip(self):
        conditions = normalize_conditions(
            [
                {"path": "total", "operator": ">", "value": 100},
                {"path": "category", "operator": "in", "value": ["shoes", "bags"]},
                {"path": "coupon", "operator": "exists"},
            ]
        )
        self.assertTrue(params_match(conditions, {"total": 101, "category": "bags", "coupon": "X"}))
        text = format_conditions(conditions)
        self.assertEqual(text, 'total > 100 and category in ["shoes", "bags"] and coupon exists')
        self.assertEqual(parse_params_filter(text), conditions)
        for bad, message in (
            ({"path": "a b", "operator": "=="}, "invalid parameter path"),
            ({"path": "a", "operator": "~"}, "unknown operator"),
            ({"path": "a", "operator": "==", "value": {"x": 1}}, "number, a string or a boolean"),
        ):
            with self.subTest(bad=bad), self.assertRaisesRegex(ParamsFilterError, message):
                normalize_conditions([bad])

    def test_rule_filter_is_checked_against_the_learned_structure(self):
        self.Event._ingest(
            self.source, [{"event": "test_purchase", "contact": {"id": self.partner.id}, "params": {"total": 10}}]
        )
        rule = self.env["marketing.engagement.rule"].create(
            {
                "name": "Big purchase",
                "event_type_id": self.type_purchase.id,
                "points": 10,
                "params_filter": 'total > "99"',
            }
        )
        self.assertEqual(rule.params_conditions, [{"path": "total", "operator": ">", "value": 99, "type": "number"}])
        with self.assertRaisesRegex(ValidationError, "Parameter Filter of rule Big purchase: .*total is a number"):
            rule.params_filter = 'total > "ninety"'
