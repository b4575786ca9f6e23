from . import mailing_contact_import
from . import marketing_coupon_import_wizard
from . import marketing_engagement_adjust_wizard
from . import marketing_event_source_key_wizard
from . import marketing_scenario_enroll_wizard
from . import marketing_scenario_import_wizard
from . import marketing_scenario_objective_wizard
from . import marketing_scenario_test_wizard
