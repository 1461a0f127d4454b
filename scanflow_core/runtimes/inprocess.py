"""The in-process runtime: a step's ``call`` runs in this process, in the caller's thread.

What the function prints goes to the step's log (per thread, so parallel steps keep apart).
With a ``timeout`` the call runs in a worker thread; Python cannot kill a thread, so a call that
overruns is abandoned and the step fails — use ``runtime: local`` where a hard kill is needed.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from scanflow_core.callables import bind_arguments, load_callable, numeric_metrics
from scanflow_core.errors import StepFailed
from scanflow_core.plugins import hookimpl
from scanflow_core.records import ExecutionResult
from scanflow_core.runs import StepRun


class _LazyLog:
    """The step log, opened on the first write: a step that prints nothing costs no file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = self._path.open("a", encoding="utf-8", buffering=1)
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


_log: contextvars.ContextVar[_LazyLog | None] = contextvars.ContextVar("scanflow_step_log", default=None)


class _StepStream(io.TextIOBase):
    """Stands in for sys.stdout/stderr: writes go to the running step's log, else to the original."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        target = _log.get()
        if target is None:
            return self.original.write(text)
        return target.write(text)

    def flush(self) -> None:
        target = _log.get()
        (target or self.original).flush()

    def isatty(self) -> bool:
        return _log.get() is None and self.original.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


_install_lock = threading.Lock()


def _install_streams() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _StepStream):
            sys.stdout = _StepStream(sys.stdout)
        if not isinstance(sys.stderr, _StepStream):
            sys.stderr = _StepStream(sys.stderr)


@contextmanager
def _captured(step_run: StepRun) -> Iterator[_LazyLog]:
    _install_streams()
    log = _LazyLog(step_run.log_path)
    token = _log.set(log)
    try:
        yield log
    finally:
        _log.reset(token)
        log.close()


def _call(step_run: StepRun, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    with _captured(step_run) as log, step_run.recorder.active():
        try:
            return func(**kwargs)
        except BaseException:
            log.write(traceback.format_exc())
            raise


@hookimpl(trylast=True)
def scanflow_execute_step(step_run: StepRun) -> ExecutionResult | None:
    spec = step_run.step.spec
    if spec.call is None or spec.kind == "container" or spec.runtime not in ("auto", "inprocess"):
        return None
    search = [step_run.step.directory / p for p in step_run.step.workflow.python_path]
    func = load_callable(spec.call, search)
    kwargs = bind_arguments(func, step_run.params, step_run.inputs, step_run.outputs, step_run)
    if step_run.timeout is None:
        value = _call(step_run, func, kwargs)
    else:
        value = _call_with_timeout(step_run, func, kwargs, step_run.timeout)
    step_run.recorder.log_metrics(numeric_metrics(value))
    return ExecutionResult(
        "inprocess", value=value, used_params=frozenset(kwargs) & frozenset(step_run.params)
    )


def _call_with_timeout(
    step_run: StepRun, func: Callable[..., Any], kwargs: dict[str, Any], timeout: float
) -> Any:
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome["value"] = context.run(_call, step_run, func, kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"step-{step_run.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise StepFailed(
            step_run.name,
            step_run.run.run_id,
            f"timed out after {timeout:g}s (the in-process call was abandoned; runtime: local kills instead)",
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
