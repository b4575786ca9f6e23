# Helpers without the ORM: imported by the models, never importing them.
