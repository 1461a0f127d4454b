"""Helpers shared by the Flyte tests."""

from __future__ import annotations

#: flytekit gives each local task execution a checkpoint holding a TemporaryDirectory, which it removes in
#: ``SyncCheckpoint.__del__``. A failing task's traceback keeps the checkpoint in a reference cycle, and
#: when the cyclic collector frees it the TemporaryDirectory's own finalizer can run first and warn. The
#: folder is removed either way; the warning is flytekit's (flytekit/core/checkpointer.py), not ours.
FLYTEKIT_CHECKPOINT_WARNING = "ignore:Implicitly cleaning up <TemporaryDirectory:ResourceWarning"
