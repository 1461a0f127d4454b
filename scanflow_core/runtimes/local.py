"""The local-process runtime: a step's ``command`` (or a ``call`` with ``runtime: local``) runs as a
child process, with its output in the step log, a hard timeout, and metrics read back from
``SCANFLOW_RECORD_FILE``.

Commands may use ``{params.NAME}``, ``{inputs.NAME}``, ``{outputs.NAME}``, ``{run_id}`` and
``{step}``; the same values are in the environment as ``SCANFLOW_PARAM_NAME``,
``SCANFLOW_INPUT_NAME`` and ``SCANFLOW_OUTPUT_NAME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scanflow_core.errors import StepFailed
from scanflow_core.exec import ARGS_ENV, CALL_ENV
from scanflow_core.plugins import hookimpl
from scanflow_core.recorder import RECORD_FILE_ENV
from scanflow_core.records import ExecutionResult
from scanflow_core.runs import StepRun

_TAIL_LINES = 20
_POLL_S = 0.1

#: Where a host path is seen by the step's code: itself for a local process, a mount point in a container.
PathMap = Callable[[Path], str]


class _Namespace:
    def __init__(self, values: Mapping[str, Any], what: str) -> None:
        self._values, self._what = values, what

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"{self._what}.{name}") from None


def command_argv(step_run: StepRun, paths: PathMap = str, python: str = sys.executable) -> list[str]:
    """The step's command with its placeholders filled in (paths as ``paths`` maps them).

    A ``call`` runs as ``python -m scanflow_core.exec``, with ``python`` the interpreter to use.
    """
    spec = step_run.step.spec
    if spec.call is not None:
        return [python, "-m", "scanflow_core.exec"]
    command = spec.command
    parts = shlex.split(command) if isinstance(command, str) else list(command or [])
    values = {
        "params": _Namespace(step_run.params, "params"),
        "inputs": _Namespace({k: paths(v) for k, v in step_run.inputs.items()}, "inputs"),
        "outputs": _Namespace({k: paths(v) for k, v in step_run.outputs.items()}, "outputs"),
        "run_id": step_run.run.run_id,
        "step": step_run.name,
    }
    try:
        return [part.format_map(values) for part in parts]
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise StepFailed(
            step_run.name, step_run.run.run_id, f"command placeholder {exc} is not defined"
        ) from None


def step_environment(step_run: StepRun, record_file: Path, paths: PathMap = str) -> dict[str, str]:
    """What a child process (or a container) of the step finds in its environment.

    Paths (the run folder, the record file, inputs, outputs, the ``call``'s python path) are given
    as ``paths`` maps them: a container runtime passes its mount points.
    """
    step = step_run.step
    env = {
        "SCANFLOW_RUN_ID": step_run.run.run_id,
        "SCANFLOW_STEP": step_run.name,
        "SCANFLOW_STAGE": step_run.stage,
        "SCANFLOW_RUN_DIR": paths(step_run.run.directory),
        RECORD_FILE_ENV: paths(record_file),
        "SCANFLOW_PARAMS": json.dumps(step_run.params, default=str),
    }
    for name, value in step_run.params.items():
        env[f"SCANFLOW_PARAM_{name.upper()}"] = (
            value if isinstance(value, str) else json.dumps(value, default=str)
        )
    env.update({f"SCANFLOW_INPUT_{k.upper()}": paths(v) for k, v in step_run.inputs.items()})
    env.update({f"SCANFLOW_OUTPUT_{k.upper()}": paths(v) for k, v in step_run.outputs.items()})
    if step.spec.call is not None:
        env[CALL_ENV] = step.spec.call
        env[ARGS_ENV] = json.dumps(
            {
                "params": step_run.params,
                "inputs": {k: paths(v) for k, v in step_run.inputs.items()},
                "outputs": {k: paths(v) for k, v in step_run.outputs.items()},
                "python_path": [paths(step.directory / p) for p in step.workflow.python_path],
            },
            default=str,
        )
    env.update(step_run.env)
    return env


@hookimpl(trylast=True)
def scanflow_execute_step(step_run: StepRun) -> ExecutionResult | None:
    spec = step_run.step.spec
    runs_here = spec.kind == "command" and spec.runtime in ("auto", "local")
    runs_here = runs_here or (spec.runtime == "local" and (spec.call is not None or spec.command is not None))
    if not runs_here:
        return None
    return run_local(step_run)


def run_local(step_run: StepRun) -> ExecutionResult:
    """Run the step's ``command`` (or its ``call`` through ``scanflow_core.exec``) as a child process.

    Also the fallback of a container step with ``runtime: auto`` on a machine without an engine.
    """
    record_file = step_run.directory / "record.jsonl"
    record_file.unlink(missing_ok=True)
    argv = command_argv(step_run)
    env = {**os.environ, **step_environment(step_run, record_file)}
    core_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (core_root, env.get("PYTHONPATH", "")) if p)
    with step_run.log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                argv,
                cwd=step_run.step.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise StepFailed(
                step_run.name, step_run.run.run_id, f"cannot start {argv[0]!r}: {exc.strerror}"
            ) from None
        try:
            code = _wait(process, step_run)
        except subprocess.TimeoutExpired:
            _kill(process)
            step_run.recorder.replay(record_file)
            raise StepFailed(
                step_run.name,
                step_run.run.run_id,
                f"timed out after {step_run.timeout:g}s and was killed",
                log_tail(step_run),
            ) from None
        except BaseException:
            _kill(process)
            raise
    step_run.recorder.replay(record_file)
    if code != 0:
        raise StepFailed(
            step_run.name, step_run.run.run_id, f"{argv[0]} exited with code {code}", log_tail(step_run)
        )
    return ExecutionResult("local", exit_code=code, details={"argv": argv})


def _wait(process: subprocess.Popen[bytes], step_run: StepRun) -> int:
    """Wait for the child, up to the step's timeout; an interrupted run kills it at once."""
    deadline = None if step_run.timeout is None else time.monotonic() + step_run.timeout
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise subprocess.TimeoutExpired(process.args, step_run.timeout or 0)
        try:
            return process.wait(timeout=_POLL_S if left is None else min(_POLL_S, left))
        except subprocess.TimeoutExpired:
            if step_run.run.cancelled.is_set():
                _kill(process)
                reason = "interrupted"
                raise StepFailed(step_run.name, step_run.run.run_id, reason, log_tail(step_run)) from None


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def log_tail(step_run: StepRun) -> str:
    """The last lines of the step's log, for an error message."""
    try:
        lines = step_run.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_TAIL_LINES:])
