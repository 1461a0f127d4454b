from scanflow_core.cli import entry

entry()
