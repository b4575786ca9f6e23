from . import marketing_event_source_key_wizard
