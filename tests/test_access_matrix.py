from odoo.exceptions import AccessError
from odoo.tests import new_test_user
from odoo.tests import tagged

from .common import MarketingAutomationCommon

MODULE = "marketing_event_automation"
ROLES = ("public", "portal", "sales", "marketing_user", "marketing_manager")
OPERATIONS = {"r": "read", "w": "write", "c": "create", "u": "unlink"}

# The intended rights of each role on each model of the module, as letters:
# r(ead) w(rite) c(reate) u(nlink). Portal and public users get nothing.
# A model of the module missing here fails test_every_model_has_an_entry.
INTENDED_RIGHTS = {
    # Configuration: marketers read it, their administrators manage it.
    "marketing.event.category": {"marketing_user": "r", "marketing_manager": "rwcu"},
    "marketing.event.type": {"marketing_user": "r", "marketing_manager": "rwcu"},
    # API credentials: administrators only.
    "marketing.event.source": {"marketing_manager": "rwcu"},
    "marketing.event.source.key.wizard": {"marketing_manager": "rwc"},
    # The event log is append-only: only the API and Odoo write it (as
    # superuser); administrators may purge it.
    "marketing.event": {"marketing_user": "r", "marketing_manager": "ru"},
    # The ingestion code of the event log (an abstract model): no records, no rights.
    "marketing.event.ingestion": {},
    # Subscription tracking shared by mailing contacts and lists (an abstract model).
    "marketing.subscription.tracking.mixin": {},
    # Score history: every employee sees it on the contact form; only the
    # engine writes it (score changes go through _marketing_change_score).
    "marketing.engagement.log": {"sales": "r", "marketing_user": "r", "marketing_manager": "ru"},
    "marketing.engagement.rule": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.engagement.adjust.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
    # Scenarios: built by marketers; the engine creates participants and steps.
    "marketing.scenario": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.scenario.node": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.scenario.participant": {"marketing_user": "r", "marketing_manager": "rwcu"},
    "marketing.scenario.step": {"marketing_user": "r", "marketing_manager": "rwcu"},
    "marketing.scenario.test.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
    # Templates ship with the module; administrators may adjust or add some.
    "marketing.scenario.objective.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
    "marketing.scenario.template": {"marketing_user": "r", "marketing_manager": "rwcu"},
    # System automations: marketers build them, administrators delete them;
    # runs are written by the cron.
    "marketing.system.automation": {"marketing_user": "rwc", "marketing_manager": "rwcu"},
    "marketing.system.automation.job": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.system.automation.run": {"marketing_user": "r", "marketing_manager": "rwcu"},
    "marketing.system.automation.run.job": {"marketing_user": "r", "marketing_manager": "rwcu"},
    "marketing.system.schedule": {"marketing_user": "rwc", "marketing_manager": "rwcu"},
    # Segments: built by marketers; only the dispatcher and the refresh cron
    # write memberships.
    "marketing.segment": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.segment.rule": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.segment.member": {"marketing_user": "r", "marketing_manager": "r"},
    # Retention: the purge (an abstract model) writes the daily figures of the
    # rows it deletes; everybody else only reads them.
    "marketing.retention": {},
    "marketing.event.daily": {"marketing_user": "r", "marketing_manager": "r"},
    "marketing.scenario.daily": {"marketing_user": "r", "marketing_manager": "r"},
    "marketing.segment.rule.daily": {"marketing_user": "r", "marketing_manager": "r"},
    # Record events create Odoo automation rules: administrators only.
    "marketing.record.trigger": {"marketing_user": "r", "marketing_manager": "rwcu"},
    # Coupon lists: marketers keep them; their codes are written by imports,
    # generation and the engine (in SQL), read by marketers, purged by administrators.
    "marketing.coupon.list": {"marketing_user": "rwcu", "marketing_manager": "rwcu"},
    "marketing.coupon": {"marketing_user": "r", "marketing_manager": "ru"},
    "marketing.coupon.import.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
    "marketing.scenario.enroll.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
    "marketing.scenario.import.wizard": {"marketing_user": "rwc", "marketing_manager": "rwc"},
}

# Odoo models the module extends: their rights stay Odoo's (the module adds no
# access line for them). The fields it adds to them, with the group allowed to
# read them (None: whoever reads the record).
EXTENDED_MODELS = {
    # Reads a form-labelled JSON body before Odoo parses the form; no field.
    "ir.http": {},
    "res.partner": {
        "marketing_external_id": "base.group_user",
        # Which API source created the contact (it may update its details).
        "marketing_source_id": "base.group_user",
        "engagement_score": "base.group_user",
        "engagement_score_set": "base.group_user",
        "engagement_score_band": "base.group_user",
        "engagement_log_ids": "base.group_user",
        "engagement_log_count": "base.group_user",
        "marketing_scenario_count": "base.group_user",
        "marketing_scenario_names": "base.group_user",
        # An ordinary contact detail (birthday scenarios wait for it).
        "marketing_birthday": None,
        # Filled only from the context of a scenario sending, for its templates.
        "marketing_event_params": None,
        # Segments are the marketers' business.
        "marketing_segment_member_ids": "marketing_event_automation.group_marketing_automation_user",
        "marketing_segment_ids": "marketing_event_automation.group_marketing_automation_user",
        "marketing_coupon_code": None,
        # The contact's worth, like the score: internal users only, written by the engine.
        "marketing_lifetime_value": "base.group_user",
        "marketing_value_currency_id": "base.group_user",
    },
    "res.company": {
        "engagement_decay_enabled": None,
        "engagement_decay_points": None,
        "engagement_decay_days": None,
        "marketing_watched_field_ids": None,
    },
    "res.config.settings": {
        "engagement_decay_enabled": None,
        "engagement_decay_points": None,
        "engagement_decay_days": None,
        "marketing_watched_field_ids": None,
    },
    "mailing.contact": {},
    "mailing.contact.import": {},
    "mailing.list": {},
    "mailing.mailing": {"marketing_segment_id": "marketing_event_automation.group_marketing_automation_user"},
    # Automation rules gain the link to the record event they run; their rights stay Odoo's.
    "base.automation": {"marketing_record_trigger_id": None},
    "mailing.subscription": {},
    "mailing.trace": {},
}


@tagged("post_install", "-at_install")
class TestAccessMatrix(MarketingAutomationCommon):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.portal_user = new_test_user(cls.env, login="mea_portal", groups="base.group_portal")
        cls.users = {
            "public": cls.env.ref("base.public_user"),
            "portal": cls.portal_user,
            "sales": cls.sales_user,
            "marketing_user": cls.marketing_user,
            "marketing_manager": cls.marketing_manager,
        }

    def module_models(self):
        """(own models, extended models) of the module, from the registry."""
        own, extended = set(), set()
        for name in self.env.registry:
            model_class = type(self.env[name])
            if model_class._original_module == MODULE:
                own.add(name)
            elif any(getattr(parent, "_module", None) == MODULE for parent in model_class.__mro__):
                extended.add(name)
        return own, extended

    def test_every_model_has_an_entry(self):
        own, extended = self.module_models()
        self.assertTrue(own and extended)
        self.assertEqual(sorted(own - INTENDED_RIGHTS.keys()), [], "models without an intended access matrix")
        self.assertEqual(sorted(INTENDED_RIGHTS.keys() - own), [], "matrix entries of models that do not exist")
        self.assertEqual(sorted(extended ^ EXTENDED_MODELS.keys()), [], "extended models to review")
        owned_models = self.env["ir.model.data"].search([("module", "=", MODULE), ("model", "=", "ir.model")])
        self.assertLessEqual(own, set(self.env["ir.model"].browse(owned_models.mapped("res_id")).mapped("model")))

    def test_model_rights_match_the_matrix(self):
        for model_name, rights in INTENDED_RIGHTS.items():
            for role in ROLES:
                user = self.users[role]
                for letter, operation in OPERATIONS.items():
                    with self.subTest(model=model_name, role=role, operation=operation):
                        expected = letter in rights.get(role, "")
                        allowed = self.env[model_name].with_user(user).browse().has_access(operation)
                        self.assertEqual(allowed, expected)

    def test_extended_models_keep_odoo_rights(self):
        access = self.env["ir.model.access"].search([("model_id.model", "in", list(EXTENDED_MODELS))])
        self.assertFalse(
            access.filtered(lambda line: line.get_external_id()[line.id].startswith(f"{MODULE}.")),
            "the module must not change the rights of the models it extends",
        )
        for model_name, fields_groups in EXTENDED_MODELS.items():
            model_fields = self.env[model_name]._fields
            for field_name, group in fields_groups.items():
                with self.subTest(model=model_name, field=field_name):
                    self.assertEqual(model_fields[field_name].groups, group)
        added = {name for name, field in self.env["res.partner"]._fields.items() if MODULE in (field._modules or ())}
        self.assertLessEqual(added, EXTENDED_MODELS["res.partner"].keys(), "new res.partner fields to review")

    def test_record_rules_of_every_company_bound_model(self):
        """Each model with a company field has a company rule of the module (see test_multi_company)."""
        rules = self.env["ir.rule"].search([("model_id.model", "in", list(INTENDED_RIGHTS))])
        ruled = set(rules.mapped("model_id.model"))
        for model_name in INTENDED_RIGHTS:
            Model = self.env[model_name]
            if "company_id" in Model._fields and not Model._transient:
                with self.subTest(model=model_name):
                    self.assertIn(model_name, ruled)
                    domains = [rule.domain_force for rule in rules if rule.model_id.model == model_name]
                    self.assertTrue(all("company_ids" in domain for domain in domains))

    def test_searching_follows_read_rights(self):
        """A real search per role and model: allowed ones answer, the others raise AccessError."""
        for model_name, rights in INTENDED_RIGHTS.items():
            if self.env[model_name]._transient:
                continue
            for role in ROLES:
                with self.subTest(model=model_name, role=role):
                    Model = self.env[model_name].with_user(self.users[role])
                    if "r" in rights.get(role, ""):
                        Model.search([], limit=1)
                    else:
                        with self.assertRaises(AccessError):
                            Model.search([], limit=1)

    def test_real_operations(self):
        self.env["res.partner"]._marketing_change_score({self.partner.id: 7}, "Booth", "manual")
        [event_id] = self.Event._insert_events(
            [{"type": self.type_purchase, "key": self.type_purchase.key, "partner_id": self.partner.id, "params": {}}]
        )
        event = self.Event.browse(event_id)
        log = self.partner.engagement_log_ids
        scenario = self.env["marketing.scenario"].create({"name": "Welcome", "trigger_type": "now"})

        # Salespeople see the score history of contacts, nothing else of the module.
        self.assertEqual(log.with_user(self.sales_user).read(["score"])[0]["score"], 7)
        for records in (event, scenario, self.source, self.type_purchase):
            with self.subTest(model=records._name), self.assertRaises(AccessError):
                records.with_user(self.sales_user).read(["display_name"])
        with self.assertRaises(AccessError):
            log.with_user(self.sales_user).unlink()

        # Marketers read events but cannot forge or change them, nor the score history.
        self.assertEqual(event.with_user(self.marketing_user).partner_id, self.partner)
        with self.assertRaises(AccessError):
            event.with_user(self.marketing_user).write({"state": "processed"})
        with self.assertRaises(AccessError):
            self.Event.with_user(self.marketing_manager).create({"type_id": self.type_purchase.id})
        for user in (self.marketing_user, self.marketing_manager):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.env["marketing.engagement.log"].with_user(user).create(
                    {"partner_id": self.partner.id, "delta": 50, "score": 57, "reason": "Forged", "origin": "manual"}
                )
        with self.assertRaises(AccessError):
            self.source.with_user(self.marketing_user).read(["name"])
        with self.assertRaises(AccessError):
            scenario.with_user(self.sales_user).write({"name": "Hijacked"})
        scenario.with_user(self.marketing_user).write({"name": "Welcome back"})

        # Administrators purge events and score history, and manage sources.
        log.with_user(self.marketing_manager).unlink()
        event.with_user(self.marketing_manager).unlink()
        self.assertFalse(log.exists() or event.exists())
        self.source.with_user(self.marketing_manager).write({"name": "Renamed shop"})
        with self.assertRaises(AccessError):
            self.source.with_user(self.marketing_manager).read(["key_hash"])

    def test_portal_and_public_users_see_no_marketing_data_of_their_contact(self):
        self.env["res.partner"]._marketing_change_score({self.portal_user.partner_id.id: 12}, "Booth", "manual")
        own_contact = self.portal_user.partner_id.with_user(self.portal_user)
        self.assertEqual(own_contact.read(["name"])[0]["name"], self.portal_user.name)
        for field_name, group in EXTENDED_MODELS["res.partner"].items():
            if not group:
                continue
            with self.subTest(field=field_name), self.assertRaises(AccessError):
                own_contact.read([field_name])
        with self.assertRaises(AccessError):
            own_contact.search([("engagement_score", ">", 0)])
        public_contact = self.env.ref("base.public_user").partner_id
        with self.assertRaises(AccessError):
            public_contact.with_user(self.env.ref("base.public_user")).read(["engagement_score"])
        self.assertEqual(
            self.portal_user.partner_id.with_user(self.sales_user).read(["engagement_score"])[0]["engagement_score"], 12
        )
