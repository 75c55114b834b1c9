"""The federation's tasks, one folder each: its model, its site side and its server side.

Registered in stsfl.common.tasks (which both sides and the config read); a task's server side
never imports the client (import-linter, pyproject.toml).
"""
