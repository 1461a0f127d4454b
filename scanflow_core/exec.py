"""Run a step's ``call`` in a child process or a container: ``python -m scanflow_core.exec``.

The parent passes the call and its arguments in the environment (``SCANFLOW_CALL``,
``SCANFLOW_ARGS`` as JSON, paths as strings) and reads metrics back from ``SCANFLOW_RECORD_FILE``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from scanflow_core.callables import bind_arguments, load_callable, numeric_metrics
from scanflow_core.recorder import log_metrics

CALL_ENV = "SCANFLOW_CALL"
ARGS_ENV = "SCANFLOW_ARGS"


def main() -> int:
    ref = os.environ[CALL_ENV]
    args = json.loads(os.environ.get(ARGS_ENV, "{}"))
    search = [Path(p) for p in args.get("python_path", [])]
    func = load_callable(ref, search)
    inputs = {k: Path(v) for k, v in args.get("inputs", {}).items()}
    outputs = {k: Path(v) for k, v in args.get("outputs", {}).items()}
    kwargs = bind_arguments(func, args.get("params", {}), inputs, outputs, None)
    value = func(**kwargs)
    log_metrics(numeric_metrics(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
