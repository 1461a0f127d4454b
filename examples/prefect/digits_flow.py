"""The digits workflow as a Prefect flow: ``flow_from_spec`` on ``examples/digits/scanflow.yaml``.

Each step of the spec is a task run; ``split`` and ``train`` wait for what they need, ``evaluate`` and
``test`` run at once. Run it now, or serve it (see README.md)::

    python examples/prefect/digits_flow.py             # one flow run, here
    python examples/prefect/digits_flow.py serve       # a deployment, served by this process
"""

from __future__ import annotations

import sys
from pathlib import Path

from scanflow_prefect import flow_from_spec

SPEC = Path(__file__).resolve().parents[1] / "digits" / "scanflow.yaml"

#: The flow. A deployment's entrypoint names this variable: ``examples/prefect/digits_flow.py:digits``.
digits = flow_from_spec(SPEC)

if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        digits.serve(name="digits-nightly", cron="0 3 * * *", parameters={"params": {"seed": 0}})
    else:
        print(digits())
