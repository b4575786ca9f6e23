from . import test_engagement_score_core
from . import test_event_api
from . import test_event_type
from . import test_scenario_abandoned_cart
from . import test_scenario_actions
from . import test_scenario_engine
from . import test_scenario_performance
from . import test_scenario_triggers
