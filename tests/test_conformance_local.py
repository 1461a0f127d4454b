"""The local runner passes the adapter conformance suite (as every adapter must)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scanflow_core.conformance import AdapterConformance
from scanflow_core.plugins import get_plugin_manager
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow


class TestLocalRunnerConformance(AdapterConformance):
    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        run_workflow(
            load_workflow(spec, params),
            run_id=run_id,
            home=home,
            pm=get_plugin_manager(autoload=False),
            params=params,
        )


class TestCliConformance(AdapterConformance):
    """The ``scanflow run`` command in its own process: a different process from the reference run."""

    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        import os
        import subprocess
        import sys

        args = [
            sys.executable,
            "-m",
            "scanflow_core",
            "run",
            str(spec),
            "--home",
            str(home),
            "--run-id",
            run_id,
            "-q",
        ]
        for key, value in params.items():
            args += ["--param", f"{key}={value}"]
        env = {**os.environ, "SCANFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"}
        subprocess.run(args, env=env, check=False, capture_output=True)
