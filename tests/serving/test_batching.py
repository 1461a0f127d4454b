"""The batcher: requests waiting while the model is busy are joined into one call and cut back apart;
a failing batch is retried request by request; inputs of different shapes are never joined."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scanflow_core.serving.batching import Batcher, ModelFailed
from scanflow_core.serving.payloads import split_output


class SlowDouble:
    """Doubles its input; the first call waits until released, so that others queue up behind it."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.calls:
            self.release.wait(10)
        self.calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative\nmore detail")
        return x * 2


async def _ask_while_busy(batcher: Batcher, model: SlowDouble, inputs: list[np.ndarray]) -> list[Any]:
    first = batcher.submit(inputs[0])
    await asyncio.sleep(0.05)  # the worker is now inside the first call
    rest = [batcher.submit(x) for x in inputs[1:]]
    model.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_waiting_requests_are_joined_into_one_call_and_cut_back() -> None:
    model = SlowDouble()
    batcher = Batcher(model, max_batch_rows=100).start()
    inputs = [np.full((n, 3), float(i)) for i, n in enumerate([1, 2, 3, 1, 4], start=1)]

    answers = asyncio.run(_ask_while_busy(batcher, model, inputs))
    batcher.stop()

    assert model.calls == [1, 10]  # the first alone, then the four that waited, as one call
    for x, y in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(y, x * 2)


def test_a_batch_is_cut_at_max_batch_rows() -> None:
    model = SlowDouble()
    batcher = Batcher(model, max_batch_rows=4).start()
    inputs = [np.ones((2, 3)) for _ in range(6)]

    answers = asyncio.run(_ask_while_busy(batcher, model, inputs))
    batcher.stop()

    assert model.calls == [2, 4, 4, 2]
    assert all(np.array_equal(a, np.full((2, 3), 2.0)) for a in answers)


def test_when_a_batch_fails_only_the_bad_request_fails() -> None:
    model = SlowDouble()
    batcher = Batcher(model).start()
    inputs = [np.ones((1, 2)), np.ones((1, 2)), -np.ones((1, 2)), np.ones((1, 2))]

    answers = asyncio.run(_ask_while_busy(batcher, model, inputs))
    batcher.stop()

    assert model.calls == [1, 3, 1, 1, 1]  # the joined call failed: each one alone
    assert isinstance(answers[2], ModelFailed)
    assert (answers[2].kind, answers[2].message) == ("ValueError", "negative")
    assert all(np.array_equal(answers[i], np.full((1, 2), 2.0)) for i in (0, 1, 3))


def test_inputs_of_different_shapes_are_not_joined() -> None:
    model = SlowDouble()
    batcher = Batcher(model).start()
    inputs = [np.ones((1, 2)), np.ones((1, 3)), np.ones((1, 3)), np.ones((2, 2))]

    answers = asyncio.run(_ask_while_busy(batcher, model, inputs))
    batcher.stop()

    assert model.calls == [1, 2, 2]
    assert [a.shape for a in answers] == [(1, 2), (1, 3), (1, 3), (2, 2)]


def test_max_batch_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch_rows must be at least 1"):
        Batcher(lambda x: x, max_batch_rows=0)


def test_split_output_cuts_arrays_frames_lists_and_dicts() -> None:
    sizes = [1, 2]
    array = split_output(np.arange(6).reshape(3, 2), sizes)
    frame = split_output(pd.DataFrame({"a": [1, 2, 3]}), sizes)
    listed = split_output([1, 2, 3], sizes)
    named = split_output({"p": np.arange(3), "q": np.arange(3) * 10}, sizes)

    assert array is not None and [a.tolist() for a in array] == [[[0, 1]], [[2, 3], [4, 5]]]
    assert frame is not None and [f["a"].tolist() for f in frame] == [[1], [2, 3]]
    assert listed == [[1], [2, 3]]
    assert named is not None and named[1]["q"].tolist() == [10, 20]
    assert split_output(np.arange(4), sizes) is None, "4 outputs for 3 rows cannot be cut back"
    assert split_output(3.0, sizes) is None
