"""A user's own survey_ml task, installed as a plug-in (tests/test_plugin_task.py)."""
