"""Predictions off the event loop, batched: requests that arrive while the model is busy are joined
into one call.

One worker thread takes requests from a queue. When it finds several waiting with inputs of the
same kind (arrays of the same dtype and row shape), it concatenates them, calls the model once and
cuts the output back into one answer per request; nothing waits for a batch to fill, so a lone
request is answered as fast as without batching. When a batched call fails, or its output cannot be
cut back, each request is run alone, so one bad input fails only its own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scanflow_core.serving.payloads import split_output

__all__ = ["Batcher", "ModelFailed"]

log = logging.getLogger("scanflow.serving")


class ModelFailed(Exception):
    """The model raised on a request's input: ``kind`` is the exception's type, ``message`` its first
    line (no traceback: that goes to the server's log)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass
class _Job:
    model_input: Any
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    rows: int
    key: tuple[Any, ...] | None = field(default=None)


def _key(model_input: Any) -> tuple[Any, ...] | None:
    if isinstance(model_input, np.ndarray) and model_input.ndim >= 1:
        return (model_input.dtype.str, model_input.shape[1:])
    return None


def _deliver(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Batcher:
    """Runs ``predict`` on a worker thread, joining waiting requests into batches of at most
    ``max_batch_rows`` rows.

    Args:
        predict: the model's predict function (one input in, one output out).
        max_batch_rows: the most rows one call gets (a single larger request still runs alone).
        on_batch: called on the worker thread after each model call with ``(requests, rows, seconds)``.
        initializer: called on the worker thread before its first call (e.g. to set library threads).

    Examples:
        >>> batcher = Batcher(lambda x: x * 2).start()
        >>> async def ask():
        ...     return await batcher.submit(np.ones((1, 2)))
        >>> asyncio.run(ask()).tolist()
        [[2.0, 2.0]]
        >>> batcher.stop()
    """

    def __init__(
        self,
        predict: Callable[[Any], Any],
        *,
        max_batch_rows: int = 256,
        on_batch: Callable[[int, int, float], None] | None = None,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, not {max_batch_rows}")
        self._predict = predict
        self.max_batch_rows = max_batch_rows
        self._on_batch = on_batch
        self._initializer = initializer
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="scanflow-predict", daemon=True)
        self._carry: _Job | None = None

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish what is queued, then end it."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def submit(self, model_input: Any) -> asyncio.Future[Any]:
        """Queue ``model_input``; the future (of the running loop) gets the output or :class:`ModelFailed`."""
        loop = asyncio.get_running_loop()
        rows = len(model_input) if hasattr(model_input, "__len__") else 1
        job = _Job(model_input, loop.create_future(), loop, rows, _key(model_input))
        self._queue.put(job)
        return job.future

    # ------------------------------------------------------------------------------------- worker

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer()
            except Exception as exc:
                log.warning("the predict thread's initializer failed: %s", exc)
        while True:
            job = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if job is None:
                return
            jobs = self._gather(job)
            self._run(jobs)
            if self._carry is None and jobs[-1] is None:
                return

    def _gather(self, first: _Job) -> list[Any]:
        """``first`` and the waiting jobs that batch with it (``None`` last when the queue was closed)."""
        jobs: list[Any] = [first]
        rows = first.rows
        while first.key is not None and rows < self.max_batch_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                jobs.append(None)
                break
            if job.key != first.key or rows + job.rows > self.max_batch_rows:
                self._carry = job
                break
            jobs.append(job)
            rows += job.rows
        return jobs

    def _run(self, jobs: list[_Job | None]) -> None:
        real = [j for j in jobs if j is not None]
        if len(real) > 1:
            started = time.perf_counter()
            try:
                output = self._predict(np.concatenate([j.model_input for j in real]))
                parts = split_output(output, [j.rows for j in real])
            except Exception:
                parts = None
            self._report(len(real), sum(j.rows for j in real), time.perf_counter() - started)
            if parts is not None:
                for job, part in zip(real, parts, strict=True):
                    job.loop.call_soon_threadsafe(_deliver, job.future, part, None)
                return
        for job in real:
            started = time.perf_counter()
            value: Any = None
            error: BaseException | None = None
            try:
                value = self._predict(job.model_input)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0][:300]
                error = ModelFailed(type(exc).__name__, first)
                log.warning("the model failed on a request: %s: %s", type(exc).__name__, first)
                log.debug("the model's traceback", exc_info=True)
            self._report(1, job.rows, time.perf_counter() - started)
            job.loop.call_soon_threadsafe(_deliver, job.future, value, error)

    def _report(self, requests: int, rows: int, seconds: float) -> None:
        if self._on_batch is not None:
            with contextlib.suppress(Exception):  # metrics must never stop the worker
                self._on_batch(requests, rows, seconds)
