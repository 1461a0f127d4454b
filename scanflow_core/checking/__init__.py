"""Built-in checkers: each is a plugin of ``scanflow_check`` that answers for its own ``use:`` name.

A checker receives the step run, the check as the spec gives it (``check.options`` holds its own
settings) and one target artifact; it returns :class:`~scanflow_core.records.CheckResult` objects.
The core applies the spec's policy and severity, and turns a crash or a timeout into a failed
result. Heavy libraries (pandas, torch, great_expectations, scipy) are imported inside checkers.
"""
