# The plug-in package is installed and imported by tests/test_plugin_task.py, not collected here.
collect_ignore = ["halpha_window"]
