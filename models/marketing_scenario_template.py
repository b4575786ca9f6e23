import random
from collections import defaultdict
from datetime import timedelta

from markupsafe import Markup

from odoo import api
from odoo import fields
from odoo import models
from odoo.exceptions import UserError
from odoo.tools import SQL

from .marketing_event_type import flatten_structure

# Event types the templates trigger on, wait for or count as objective:
# found by key, created (shared between companies) when missing.
TEMPLATE_EVENT_TYPES = {
    "signup": ("Signed up", "event_category_contact"),
    "cart_abandoned": ("Cart abandoned", "event_category_ecommerce"),
    "purchase": ("Purchase", "event_category_ecommerce"),
    "review_submitted": ("Review submitted", "event_category_ecommerce"),
    "email_bounced": ("Email bounced", "event_category_email"),
}

# The layout of Email Marketing's default theme: the mailing opens in its editor
# like a mailing designed there.
MAILING_LAYOUT = Markup(
    '<div class="o_layout oe_unremovable oe_unmovable bg-200 o_empty_theme" data-name="Mailing">'
    '<div class="container o_mail_wrapper o_mail_regular oe_unremovable"><div class="row">'
    '<div class="col o_mail_no_options o_mail_wrapper_td bg-white oe_structure o_editable">'
    "%s"
    '<p style="font-size: 12px; color: #6c757d;"><a href="/unsubscribe_from_list">Unsubscribe</a></p>'
    "</div></div></div></div>"
)
CART_ITEMS = Markup(
    '<table class="table" style="width: 100%%;">'
    '<tr t-foreach="object.marketing_event_params.get(\'items\') or []" t-as="item">'
    "<td><t t-out=\"item.get('name') or item.get('sku')\"/></td>"
    '<td style="text-align: right;">x <t t-out="item.get(\'quantity\', 1)"/></td>'
    "</tr></table>"
    "<p><strong>%s <t t-out=\"object.marketing_event_params.get('total')\"/> "
    "<t t-out=\"object.marketing_event_params.get('currency') or ''\"/></strong></p>"
)
# The code a Give a coupon node handed to the contact, in the emails after it.
COUPON_CODE = Markup('<strong t-out="object.marketing_coupon_code"/>')
# Codes generated into the coupon list a template creates (the list's form
# generates more; coupon_list_low tells when it runs low).
TEMPLATE_COUPON_CODES = 1000
TEMPLATE_COUPON_LOW = 100


class MarketingScenarioTemplate(models.Model):
    _name = "marketing.scenario.template"
    _description = "Scenario Template"
    _order = "sequence, id"

    name = fields.Char(required=True, translate=True)
    key = fields.Char(required=True, help="Names the builder of the template (method _build_<key>).")
    sequence = fields.Integer(default=10)
    active = fields.Boolean(default=True)
    description = fields.Text(translate=True)
    trigger_summary = fields.Char(string="Starts When", translate=True)
    steps_summary = fields.Text(string="Steps", translate=True)
    icon = fields.Char(default="fa-magic", help="Font Awesome icon of the template card, e.g. fa-shopping-cart.")
    scenario_ids = fields.One2many("marketing.scenario", "template_id", string="Scenarios")
    scenario_count = fields.Integer(string="Created Scenarios", compute="_compute_scenario_count")

    _sql_constraints = [("key_unique", "UNIQUE(key)", "A template key is unique.")]

    @api.depends("scenario_ids")
    def _compute_scenario_count(self):
        counts = dict(
            self.env["marketing.scenario"]
            .with_context(active_test=False)
            ._read_group([("template_id", "in", self.ids)], ["template_id"], ["__count"])
        )
        for template in self:
            template.scenario_count = counts.get(template, 0)

    # ------------------------------------------------------------------
    # Creating a scenario
    # ------------------------------------------------------------------

    def action_create_scenario(self):
        """Create the template's scenario and open it."""
        self.ensure_one()
        scenario = self._create_scenario()
        return scenario._action_open()

    def _create_scenario(self, **values):
        """A complete draft scenario built by this template's builder, ready to start."""
        self.ensure_one()
        builder = getattr(self, f"_build_{self.key}", None)
        if builder is None:
            raise UserError(
                self.env._("Template %(name)s: no builder for its key %(key)r.", name=self.name, key=self.key)
            )
        scenario = builder(values)
        scenario.template_id = self
        return scenario

    def _event_types(self, *keys):
        """The event types of ``keys`` (this company's or shared ones), created when missing."""
        EventType = self.env["marketing.event.type"]
        found = EventType._get_by_keys(keys, self.env.company)
        missing = [key for key in keys if key not in found]
        if missing:
            # sudo: a template registers the event types it needs, as the API's
            # "register" policy does, whatever the marketer's rights on types.
            created = (
                EventType.sudo()
                .create(
                    [
                        {
                            "name": TEMPLATE_EVENT_TYPES[key][0],
                            "key": key,
                            "category_id": self.env.ref(
                                f"marketing_event_automation.{TEMPLATE_EVENT_TYPES[key][1]}"
                            ).id,
                        }
                        for key in missing
                    ]
                )
                .sudo(False)
            )
            found.update({event_type.key: event_type for event_type in created})
        archived = EventType.browse([found[key].id for key in keys if not found[key].active])
        # sudo: see above; an archived type would refuse the events the scenario waits for.
        archived.sudo().write({"active": True})
        return [EventType.browse(found[key].id) for key in keys]

    def _tag(self, name):
        # sudo: tags are shared data a marketer may lack the right to create.
        Tag = self.env["res.partner.category"].sudo()
        return (Tag.search([("name", "=", name)], limit=1) or Tag.create({"name": name})).sudo(False)

    def _new_scenario(self, values, **defaults):
        return self.env["marketing.scenario"].create({"timezone": self.env.user.tz or "UTC", **defaults, **values})

    @staticmethod
    def _node(scenario, node_type, parent=None, **values):
        return scenario.env["marketing.scenario.node"].create(
            {"scenario_id": scenario.id, "node_type": node_type, "parent_id": parent.id if parent else False, **values}
        )

    def _email(self, scenario, parent, name, *, subject, preview, body, **values):
        """An email node whose own mailing gets the sample subject and body."""
        node = self._node(scenario, "email", parent, name=name, **values)
        html = MAILING_LAYOUT % body
        # sudo: the node's own mailing, created by the node with sudo too.
        node.mailing_id.sudo().write({"subject": subject, "preview": preview, "body_arch": html, "body_html": html})
        return node

    def _coupon(self, scenario, parent, name, *, list_name, prefix, value, **values):
        """A Give a coupon node on a coupon list of its own, created with the scenario and its codes."""
        coupon_list = self.env["marketing.coupon.list"].create(
            {
                "name": list_name,
                "company_id": scenario.company_id.id,
                "code_prefix": prefix,
                "value_description": value,
                "low_threshold": TEMPLATE_COUPON_LOW,
            }
        )
        coupon_list._generate(TEMPLATE_COUPON_CODES)
        return self._node(scenario, "coupon", parent, name=name, coupon_list_id=coupon_list.id, **values)

    @staticmethod
    def _paragraphs(*paragraphs):
        return Markup("").join(Markup("<p>%s</p>") % paragraph for paragraph in paragraphs)

    def _hello(self):
        return Markup("%s <t t-out=\"object.name or ''\"/>,") % self.env._("Hello")

    # ------------------------------------------------------------------
    # Builders, one per template key: each returns a draft scenario that passes the Start checks
    # ------------------------------------------------------------------

    def _build_welcome_series(self, values):
        signup, purchase = self._event_types("signup", "purchase")
        scenario = self._new_scenario(
            values,
            name=self.env._("Welcome series"),
            trigger_type="event",
            trigger_event_type_id=signup.id,
            entry_policy="once",
            objective_event_type_id=purchase.id,
            objective_days=14,
        )
        window = {"window_enabled": True, "window_start": 9.0, "window_end": 18.0, "window_timezone": "contact"}
        welcome = self._email(
            scenario,
            None,
            self.env._("Welcome email"),
            subject=self.env._("Welcome aboard!"),
            preview=self.env._("Thanks for signing up: here is what to expect."),
            body=self._paragraphs(
                self._hello(),
                self.env._("Thank you for signing up. Over the next days we will share what our customers love most."),
                self.env._("Reply to this email if you have any question: a real person reads it."),
            ),
        )
        wait_3 = self._node(
            scenario, "wait", welcome, name=self.env._("3 days later"), wait_amount=3, wait_unit="days", **window
        )
        tips = self._email(
            scenario,
            wait_3,
            self.env._("Bestsellers email"),
            subject=self.env._("Our bestsellers, picked for you"),
            preview=self.env._("The products our customers come back for."),
            body=self._paragraphs(
                self._hello(),
                self.env._(
                    "Here are the products our customers buy again and again. Take a look, there is one for you."
                ),
            ),
        )
        wait_4 = self._node(
            scenario, "wait", tips, name=self.env._("4 days later"), wait_amount=4, wait_unit="days", **window
        )
        gift = self._coupon(
            scenario,
            wait_4,
            self.env._("First order code"),
            list_name=self.env._("Welcome series: 10% off the first order"),
            prefix="WELCOME-",
            value=self.env._("10% off the first order"),
        )
        self._email(
            scenario,
            gift,
            self.env._("First order gift email"),
            subject=self.env._("A gift for your first order"),
            preview=self.env._("10% off with your personal code."),
            body=self._paragraphs(
                self._hello(),
                self.env._("A week ago you joined us. To celebrate, enjoy 10% off your first order with the code:"),
                COUPON_CODE,
            ),
        )
        return scenario

    def _build_abandoned_cart(self, values):
        cart, purchase = self._event_types("cart_abandoned", "purchase")
        scenario = self._new_scenario(
            values,
            name=self.env._("Abandoned cart"),
            trigger_type="event",
            trigger_event_type_id=cart.id,
            entry_policy="once_at_a_time",
            objective_event_type_id=purchase.id,
            objective_days=7,
        )
        first_wait = self._node(
            scenario,
            "wait_event",
            name=self.env._("Purchase within 4 hours?"),
            wait_event_type_id=purchase.id,
            wait_amount=4,
            wait_unit="hours",
        )
        reminder = self._email(
            scenario,
            first_wait,
            self.env._("Cart reminder"),
            subject=self.env._("You left something in your cart"),
            preview=self.env._("Your cart is saved: complete your order in one click."),
            body=self._paragraphs(self._hello(), self.env._("You left these items in your cart:"))
            + CART_ITEMS % self.env._("Total:")
            + self._paragraphs(self.env._("They are still waiting for you, but stock is limited.")),
            branch="no",
        )
        second_wait = self._node(
            scenario,
            "wait_event",
            reminder,
            name=self.env._("Purchase within a day?"),
            wait_event_type_id=purchase.id,
            wait_amount=1,
            wait_unit="days",
        )
        code = self._coupon(
            scenario,
            second_wait,
            self.env._("Cart code"),
            list_name=self.env._("Abandoned cart: 10% off"),
            prefix="CART-",
            value=self.env._("10% off the cart"),
            branch="no",
        )
        self._email(
            scenario,
            code,
            self.env._("Cart coupon"),
            subject=self.env._("10% off the cart you left"),
            preview=self.env._("Use your personal code before it expires."),
            body=self._paragraphs(self._hello(), self.env._("Still thinking about it? Your cart:"))
            + CART_ITEMS % self.env._("Total:")
            + self._paragraphs(
                self.env._("Complete your order within 48 hours and get 10% off with the code:"),
                COUPON_CODE,
            ),
        )
        return scenario

    def _build_post_purchase_review(self, values):
        purchase, review = self._event_types("purchase", "review_submitted")
        scenario = self._new_scenario(
            values,
            name=self.env._("Post-purchase review request"),
            trigger_type="event",
            trigger_event_type_id=purchase.id,
            entry_policy="once_at_a_time",
            objective_event_type_id=review.id,
            objective_days=14,
        )
        wait = self._node(
            scenario,
            "wait",
            name=self.env._("A week after the purchase"),
            wait_amount=7,
            wait_unit="days",
            window_enabled=True,
            window_start=10.0,
            window_end=17.0,
        )
        order = Markup("<t t-out=\"object.marketing_event_params.get('order_id') or ''\"/>")
        request = self._email(
            scenario,
            wait,
            self.env._("Review request"),
            subject=self.env._("How do you like your order?"),
            preview=self.env._("Tell us in one minute: your review helps other customers."),
            body=self._paragraphs(
                self._hello(),
                Markup("%s %s.") % (self.env._("We hope you enjoy your order"), order),
                self.env._("Would you take a minute to review it? Your opinion helps other customers choose."),
            ),
        )
        reviewed = self._node(
            scenario,
            "wait_event",
            request,
            name=self.env._("Reviewed within 5 days?"),
            wait_event_type_id=review.id,
            wait_amount=5,
            wait_unit="days",
        )
        self._node(
            scenario,
            "score",
            reviewed,
            name=self.env._("Thank the reviewer"),
            branch="yes",
            score_delta=5,
            score_reason=self.env._("Left a review"),
        )
        self._email(
            scenario,
            reviewed,
            self.env._("Review reminder"),
            subject=self.env._("One minute for a review?"),
            preview=self.env._("A few words are enough."),
            body=self._paragraphs(
                self._hello(),
                self.env._("A few words about your order are enough: they help us and other customers a lot."),
            ),
            branch="no",
        )
        return scenario

    def _build_reengagement(self, values):
        [purchase] = self._event_types("purchase")
        scenario = self._new_scenario(
            values,
            name=self.env._("Inactivity re-engagement"),
            trigger_type="score",
            score_operator="<",
            score_threshold=10,
            entry_policy="once_at_a_time",
            objective_event_type_id=purchase.id,
            objective_days=30,
        )
        miss_you = self._email(
            scenario,
            None,
            self.env._("We miss you"),
            subject=self.env._("We miss you!"),
            preview=self.env._("Here is what changed since your last visit."),
            body=self._paragraphs(
                self._hello(),
                self.env._("It has been a while. A lot changed since your last visit: new products, new services."),
            ),
        )
        week = self._node(scenario, "wait", miss_you, name=self.env._("A week later"), wait_amount=7, wait_unit="days")
        clicked = self._node(
            scenario,
            "condition",
            week,
            name=self.env._("Clicked?"),
            condition_type="email",
            condition_node_id=miss_you.id,
            condition_email_status="clicked",
        )
        self._node(
            scenario,
            "score",
            clicked,
            name=self.env._("Welcome back"),
            branch="yes",
            score_delta=5,
            score_reason=self.env._("Came back after the re-engagement email"),
        )
        comeback = self._coupon(
            scenario,
            clicked,
            self.env._("Come-back code"),
            list_name=self.env._("Re-engagement: 15% off"),
            prefix="COMEBACK-",
            value=self.env._("15% off the next order"),
            branch="no",
        )
        last_chance = self._email(
            scenario,
            comeback,
            self.env._("Last chance offer"),
            subject=self.env._("15% off, just for you"),
            preview=self.env._("Come back with your personal code."),
            body=self._paragraphs(
                self._hello(),
                self.env._("We would love to see you again: here is 15% off your next order with the code:"),
                COUPON_CODE,
            ),
        )
        second_week = self._node(
            scenario, "wait", last_chance, name=self.env._("Another week"), wait_amount=7, wait_unit="days"
        )
        opened = self._node(
            scenario,
            "condition",
            second_week,
            name=self.env._("Opened?"),
            condition_type="email",
            condition_node_id=last_chance.id,
            condition_email_status="opened",
        )
        self._node(
            scenario,
            "tag_add",
            opened,
            name=self.env._("Tag as dormant"),
            branch="no",
            tag_ids=[(6, 0, self._tag("Dormant").ids)],
        )
        return scenario

    def _build_birthday(self, values):
        [purchase] = self._event_types("purchase")
        birthday_field = self.env["ir.model.fields"]._get("res.partner", "marketing_birthday")
        scenario = self._new_scenario(
            values,
            name=self.env._("Birthday"),
            # Each day the contacts with a birthday enter and wait for it; once at a
            # time, so a contact waits for one birthday at a time, year after year.
            trigger_type="repeat",
            repeat_interval=1,
            repeat_unit="days",
            repeat_hour=6.0,
            entry_policy="once_at_a_time",
            audience_domain="[('marketing_birthday', '!=', False), ('email', '!=', False)]",
            objective_event_type_id=purchase.id,
            objective_days=14,
        )
        wait = self._node(
            scenario,
            "wait",
            name=self.env._("Until the birthday"),
            wait_mode="field",
            wait_field_id=birthday_field.id,
            wait_yearly=True,
            window_enabled=True,
            window_start=9.0,
            window_end=12.0,
            window_timezone="contact",
        )
        present = self._coupon(
            scenario,
            wait,
            self.env._("Birthday code"),
            list_name=self.env._("Birthday: 20% off"),
            prefix="BDAY-",
            value=self.env._("20% off for a week"),
            # A new code each year: last year's may have been used or expired.
            coupon_same_again=False,
        )
        self._email(
            scenario,
            present,
            self.env._("Birthday email"),
            subject=self.env._("Happy birthday!"),
            preview=self.env._("A present is waiting for you."),
            body=self._paragraphs(
                Markup("%s <t t-out=\"object.name or ''\"/>!") % self.env._("Happy birthday"),
                self.env._("To celebrate, here is 20% off anything you like this week with the code:"),
                COUPON_CODE,
            ),
        )
        return scenario

    def _build_engagement_reward(self, values):
        [purchase] = self._event_types("purchase")
        scenario = self._new_scenario(
            values,
            name=self.env._("High-engagement reward"),
            trigger_type="score",
            score_operator=">=",
            score_threshold=50,
            entry_policy="once",
            objective_event_type_id=purchase.id,
            objective_days=30,
        )
        vip = self._node(scenario, "tag_add", name=self.env._("Tag as VIP"), tag_ids=[(6, 0, self._tag("VIP").ids)])
        vip_code = self._coupon(
            scenario,
            vip,
            self.env._("VIP code"),
            list_name=self.env._("VIP reward: 15% off and free shipping"),
            prefix="VIP-",
            value=self.env._("15% off and free shipping"),
        )
        reward = self._email(
            scenario,
            vip_code,
            self.env._("Reward email"),
            subject=self.env._("Thank you: a reward for our best customers"),
            preview=self.env._("You are one of our most engaged customers."),
            body=self._paragraphs(
                self._hello(),
                self.env._("You are one of our most engaged customers, and we want to thank you."),
                self.env._("Enjoy free shipping and 15% off your next order with the code:"),
                COUPON_CODE,
            ),
        )
        used = self._node(
            scenario,
            "wait_event",
            reward,
            name=self.env._("Purchase within 2 weeks?"),
            wait_event_type_id=purchase.id,
            wait_amount=14,
            wait_unit="days",
        )
        self._node(
            scenario,
            "score",
            used,
            name=self.env._("Reward used"),
            branch="yes",
            score_delta=10,
            score_reason=self.env._("Used the VIP reward"),
        )
        return scenario

    def _build_list_hygiene(self, values):
        [bounced] = self._event_types("email_bounced")
        scenario = self._new_scenario(
            values,
            name=self.env._("List hygiene: bounced emails"),
            trigger_type="event",
            trigger_event_type_id=bounced.id,
            entry_policy="every_time",
            objective_prompt_skipped=True,  # cleaning a list converts nobody
        )
        blacklist = self._node(
            scenario, "blacklist", name=self.env._("Blacklist the address"), blacklist_email=True, blacklist_phone=False
        )
        self._node(
            scenario,
            "tag_add",
            blacklist,
            name=self.env._("Tag as bounced"),
            tag_ids=[(6, 0, self._tag("Bounced email").ids)],
        )
        return scenario

    # ------------------------------------------------------------------
    # Demo data: two running scenarios with 30 days of history
    # ------------------------------------------------------------------

    @api.model
    def _demo_load_history(self, seed=42):
        """Demo shop contacts, 30 days of events and the runs of two template scenarios through them.

        The history is written as it would have happened (shop events, steps, mailing traces),
        already processed: nothing is left for the crons but the waits of the welcome series
        that end in the future. Runs once: a module update keeps the existing history.
        """
        Event = self.env["marketing.event"]
        source = self.env.ref("marketing_event_automation.event_source_demo_shop")
        if Event.search_count([("source_id", "=", source.id), ("idempotency_key", "=like", "demo-%")], limit=1):
            return False
        rng = random.Random(seed)
        now = fields.Datetime.now().replace(microsecond=0)
        start = now - timedelta(days=30)
        company = self.env.company
        history = _DemoHistory(self.env, rng, now, source, company)
        partners = history.create_contacts(60)

        cart = self.env.ref("marketing_event_automation.scenario_template_abandoned_cart")._create_scenario()
        welcome = self.env.ref("marketing_event_automation.scenario_template_welcome_series")._create_scenario()
        (cart | welcome).action_start()
        (cart | welcome).write({"started_at": start - timedelta(hours=1)})

        signups = sorted((start + timedelta(minutes=rng.randint(0, 30 * 24 * 60 - 60)), p) for p in partners)
        for moment, partner in signups:
            history.event("signup", partner, moment, {"channel": rng.choice(["web", "web", "mobile", "store"])})
        history.run_welcome(welcome, signups)

        carts = []
        for number in range(150):
            partner = rng.choice(partners)
            moment = start + timedelta(minutes=rng.randint(0, 28 * 24 * 60 - 2 * 24 * 60))
            carts.append((moment, partner, history.cart_params(number)))
        carts.sort(key=lambda item: item[0])
        history.run_cart(cart, carts)
        for number in range(40):
            moment = start + timedelta(minutes=rng.randint(0, 30 * 24 * 60 - 60))
            history.purchase(rng.choice(partners), moment, history.cart_params(1000 + number))
        history.flush()
        # The history is written as rows, not through the dispatcher, which
        # stores the conversions as the events come: find them once here.
        (cart | welcome)._recompute_conversions()
        return True


DEMO_FIRST_NAMES = [
    "Emma", "Lucas", "Olivia", "Noah", "Mila", "Louis", "Alice", "Arthur", "Lina", "Jules",
    "Nora", "Victor", "Sofia", "Adam", "Julia", "Hugo", "Elena", "Leo", "Zoe", "Gabriel",
]  # fmt: skip
DEMO_LAST_NAMES = ["Peeters", "Janssens", "Maes", "Dubois", "Lambert", "Martin", "Claes", "Willems", "Leroy", "Simon"]
DEMO_CATALOGUE = [
    ("SHOE-RUN-42", "Running shoes", 89.0),
    ("SHOE-TRAIL-40", "Trail shoes", 119.0),
    ("SOCK-3P", "Sports socks (3 pairs)", 12.5),
    ("JACKET-RAIN", "Rain jacket", 74.9),
    ("CAP-SUN", "Sun cap", 19.9),
    ("BOTTLE-750", "Water bottle", 14.0),
]


class _DemoHistory:
    """Writes the demo history: events (processed), participants, steps and mailing traces."""

    def __init__(self, env, rng, now, source, company):
        self.env, self.rng, self.now, self.source, self.company = env, rng, now, source, company
        self.events = []
        self.types = {}
        self.sequence = 0

    def create_contacts(self, count):
        values = []
        for index in range(count):
            first = DEMO_FIRST_NAMES[index % len(DEMO_FIRST_NAMES)]
            last = DEMO_LAST_NAMES[(index * 7) % len(DEMO_LAST_NAMES)]
            birthday = fields.Date.today() - timedelta(days=self.rng.randint(20 * 365, 60 * 365))
            values.append(
                {
                    "name": f"{first} {last}",
                    "email": f"{first.lower()}.{last.lower()}{index}@example.com",
                    "marketing_external_id": f"DEMO-{3000 + index}",
                    "tz": "Europe/Brussels",
                    "marketing_birthday": birthday if index % 2 else False,
                }
            )
        # Muted: the demo history writes its own events, at the times they happened.
        return self.env["res.partner"].with_context(marketing_event_mute=True).create(values)

    def cart_params(self, number):
        lines = self.rng.sample(DEMO_CATALOGUE, self.rng.randint(1, 3))
        items = [
            {"sku": sku, "name": name, "quantity": self.rng.randint(1, 2), "price": price} for sku, name, price in lines
        ]
        total = round(sum(item["price"] * item["quantity"] for item in items), 2)
        return {"cart_id": f"CART-{number:05d}", "total": total, "currency": "EUR", "items": items}

    def event_type(self, key):
        if key not in self.types:
            self.types[key] = self.env["marketing.event.type"]._get_by_keys([key], self.company)[key]
        return self.types[key]

    def event(self, key, partner, moment, params):
        self.sequence += 1
        event = {
            "type": self.event_type(key),
            "key": key,
            "partner_id": partner.id,
            "company_id": self.company.id,
            "source_id": self.source.id,
            "idempotency_key": f"demo-{key}-{self.sequence}",
            "params": params,
            "occurred_at": moment,
            "state": "processed",
        }
        self.events.append(event)
        return event

    def purchase(self, partner, moment, cart_params, coupon=None):
        params = {"order_id": f"SO-{cart_params['cart_id'][5:]}", **cart_params}
        params.pop("cart_id")
        if coupon:
            params["coupon"] = coupon
        self.event("purchase", partner, moment, params)

    def flush(self):
        Event = self.env["marketing.event"]
        ids = Event._insert_events(self.events)
        structures = defaultdict(dict)
        for event in self.events:
            flatten_structure(event["params"], structure=structures[event["type"].id])
        self.env["marketing.event.type"]._learn_structures(structures)
        Event.flush_model()
        self.env.cr.execute(
            SQL(
                "UPDATE marketing_event SET processed_at = occurred_at WHERE id IN %s",
                tuple(event_id for event_id in ids if event_id),
            )
        )
        Event.invalidate_model()

    def send(self, node, partner, moment):
        """A sent email of ``node`` to ``partner`` at ``moment``: its trace, maybe opened and clicked."""
        mailing = node.mailing_id
        values = {
            "trace_type": "mail",
            "model": "res.partner",
            "res_id": partner.id,
            "mass_mailing_id": mailing.id,
            "email": partner.email_normalized,
            "trace_status": "sent",
            "sent_datetime": moment,
        }
        opened = moment + timedelta(minutes=self.rng.randint(5, 20 * 60))
        if opened < self.now and self.rng.random() < 0.55:
            values.update(trace_status="open", open_datetime=opened)
            clicked = opened + timedelta(minutes=self.rng.randint(1, 30))
            if clicked < self.now and self.rng.random() < 0.4:
                values["links_click_datetime"] = clicked
        # Muted: the email_* events of these traces are left out of the demo log, which
        # holds the shop's events only (the internal ones belong to real sendings).
        return self.env["mailing.trace"].with_context(marketing_event_mute=True).create(values)

    def step(self, participant, node, scheduled_at, **values):
        return {
            "participant_id": participant.id,
            "node_id": node.id,
            "scheduled_at": scheduled_at,
            "state": "done" if scheduled_at <= self.now else "scheduled",
            "processed_at": scheduled_at if scheduled_at <= self.now else False,
            **values,
        }

    def email_step(self, participant, node, moment):
        trace = self.send(node, participant.partner_id, moment)
        return self.step(participant, node, moment, branch="always", result=self.env._("Sent"), trace_id=trace.id)

    def coupon_step(self, steps, participant, node, moment):
        """The done step of a Give a coupon node; its result (the code) is filled by give_coupons."""
        step = self.step(participant, node, moment, branch="always")
        steps.append(step)
        return step

    def give_coupons(self, node, handouts):
        """Hand the codes of ``node``'s list to the participants ``[(participant, moment, step)]``.

        As the engine does: one claim for the contacts without a code of the
        list (a contact back for another cart gets the same code again), the
        codes stored on the participants, given at the moment of the step.
        Returns {participant id: code}.
        """
        coupon_list = node.coupon_list_id
        partner_ids = list(dict.fromkeys(participant.partner_id.id for participant, _moment, _step in handouts))
        claimed = coupon_list._claim(partner_ids, node=node)
        given, moments, codes = [], {}, {}
        for participant, moment, step in handouts:
            coupon_id, code = claimed[participant.partner_id.id]
            moments.setdefault(coupon_id, moment)
            step["result"] = code
            given.append((participant.id, coupon_id))
            codes[participant.id] = code
        node._store_participant_coupons(given)
        if moments:
            self.env.cr.execute(
                SQL(
                    "UPDATE marketing_coupon c SET given_at = v.moment"
                    " FROM unnest(%s::int[], %s::timestamp[]) AS v (id, moment) WHERE c.id = v.id",
                    list(moments),
                    list(moments.values()),
                )
            )
            self.env["marketing.coupon"].invalidate_model()
        return codes

    def redeem_coupons(self, coupon_list, codes, purchases):
        """Mark redeemed, at the purchase, the codes that the purchases after the coupon email used."""
        redeemed = {}
        for participant, bought, _params, with_coupon in purchases:
            code = codes.get(participant.id) if with_coupon else None
            if code:
                redeemed.setdefault(code, bought)
        if redeemed:
            self.env.cr.execute(
                SQL(
                    "UPDATE marketing_coupon c SET state = 'redeemed', redeemed_at = v.moment"
                    " FROM unnest(%s::varchar[], %s::timestamp[]) AS v (code, moment)"
                    " WHERE c.list_id = %s AND c.code = v.code",
                    list(redeemed),
                    list(redeemed.values()),
                    coupon_list.id,
                )
            )
            self.env["marketing.coupon"].invalidate_model()

    def participant(self, scenario, partner, moment, event_params):
        return self.env["marketing.scenario.participant"].create(
            {
                "scenario_id": scenario.id,
                "partner_id": partner.id,
                "entered_at": moment,
                "event_type_id": scenario.trigger_event_type_id.id,
                "event_params": event_params,
                "is_test": False,  # stored as false, as the engine does: statistics test "NOT is_test"
            }
        )

    def finish(self, participant, moment):
        participant.write({"state": "completed", "ended_at": moment, "end_reason": self.env._("All steps done")})

    def run_welcome(self, scenario, signups):
        """Welcome email at signup, 3 days, second email, 4 days, code, third email; later steps still scheduled."""
        email_1, wait_3, email_2, wait_4, gift, email_3 = scenario.node_ids
        steps, handouts = [], []
        waited = self.env._("Waited")
        for moment, partner in signups:
            participant = self.participant(scenario, partner, moment, {})
            steps.append(self.email_step(participant, email_1, moment))
            second = moment + timedelta(days=3)
            steps.append(self.step(participant, wait_3, second, branch="always", result=waited))
            if second > self.now:
                continue
            steps.append(self.email_step(participant, email_2, second))
            third = second + timedelta(days=4)
            steps.append(self.step(participant, wait_4, third, branch="always", result=waited))
            if third > self.now:
                continue
            handouts.append((participant, third, self.coupon_step(steps, participant, gift, third)))
            steps.append(self.email_step(participant, email_3, third))
            self.finish(participant, third)
        for step in steps:
            if step["state"] == "scheduled":
                step["result"] = step["branch"] = False
        self.give_coupons(gift, handouts)
        self.env["marketing.scenario.step"].create(steps)

    def run_cart(self, scenario, carts):
        """Wait 4 h for a purchase, reminder, wait a day, coupon; a quarter buy at once, others later or never."""
        wait_1, reminder, wait_2, give, coupon = scenario.node_ids
        received = self.env._("%(type)s received", type=self.event_type("purchase").name)
        timed_out = self.env._("Timed out")
        busy_until = {}
        steps, handouts, purchases = [], [], []
        for moment, partner, params in carts:
            self.event("cart_abandoned", partner, moment, params)
            luck = self.rng.random()
            if luck < 0.25:
                bought = moment + timedelta(minutes=self.rng.randint(10, 230))
            elif luck < 0.4:
                bought = moment + timedelta(hours=self.rng.randint(5, 27))
            elif luck < 0.5:
                bought = moment + timedelta(hours=self.rng.randint(29, 100))
            else:
                bought = None
            if busy_until.get(partner.id, moment) > moment:
                if bought:
                    self.purchase(partner, bought, params)
                continue  # once at a time: still in its previous cart's run
            participant = self.participant(scenario, partner, moment, params)
            first_timeout, second_timeout = moment + timedelta(hours=4), moment + timedelta(days=1, hours=4)
            if bought and bought < first_timeout:
                steps.append(self.step(participant, wait_1, bought, branch="yes", result=received))
                end = bought
            else:
                steps.append(self.step(participant, wait_1, first_timeout, branch="no", result=timed_out))
                steps.append(self.email_step(participant, reminder, first_timeout))
                if bought and bought < second_timeout:
                    steps.append(self.step(participant, wait_2, bought, branch="yes", result=received))
                    end = bought
                else:
                    steps.append(self.step(participant, wait_2, second_timeout, branch="no", result=timed_out))
                    step = self.coupon_step(steps, participant, give, second_timeout)
                    handouts.append((participant, second_timeout, step))
                    steps.append(self.email_step(participant, coupon, second_timeout))
                    end = second_timeout
            if bought:
                purchases.append((participant, bought, params, bought >= second_timeout))
            self.finish(participant, end)
            busy_until[partner.id] = end
        codes = self.give_coupons(give, handouts)
        for participant, bought, params, with_coupon in purchases:
            code = codes.get(participant.id) if with_coupon else None
            self.purchase(participant.partner_id, bought, params, coupon=code)
            if code:
                self.event("coupon_redeemed", participant.partner_id, bought, {"code": code})
        self.redeem_coupons(give.coupon_list_id, codes, purchases)
        self.env["marketing.scenario.step"].create(steps)
