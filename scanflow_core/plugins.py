"""The plugin manager: built-in plugins first, then the ``scanflow.plugins`` entry points."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Iterable
from typing import Any

import pluggy

from scanflow_core import hookspecs
from scanflow_core.errors import PluginError

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "describe_plugins",
    "get_plugin_manager",
    "hookimpl",
    "shared_plugin_manager",
]

ENTRY_POINT_GROUP = "scanflow.plugins"
DISABLE_AUTOLOAD = "SCANFLOW_DISABLE_PLUGIN_AUTOLOAD"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)

#: Built-in features, registered exactly like third-party plugins (modules with hook functions).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "scanflow_core.runtimes.inprocess",
    "scanflow_core.runtimes.local",
    "scanflow_core.runtimes.docker",
    "scanflow_core.stages",
    "scanflow_core.attestation.plugin",
    "scanflow_core.tracking.mlflow_tracker",
    "scanflow_core.checking.builtin",
    "scanflow_core.runtimes.sidecars",  # after the tracker: its workflow start runs first
)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, with a clear error when a class is registered instead of an instance."""

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        if isinstance(plugin, type):
            raise TypeError(
                f"{plugin.__name__} is a class; register an instance of it: pm.register({plugin.__name__}())"
            )
        try:
            return super().register(plugin, name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name or plugin!r} does not fit Scanflow's hooks: {exc}") from exc


def get_plugin_manager(
    plugins: Iterable[Any] = (), *, builtins: bool = True, autoload: bool | None = None
) -> PluginManager:
    """A fresh plugin manager.

    Args:
        plugins: extra plugin objects (modules or instances) to register after the built-ins.
        builtins: register :data:`DEFAULT_PLUGINS`.
        autoload: load the ``scanflow.plugins`` entry points; by default yes, unless the
            ``SCANFLOW_DISABLE_PLUGIN_AUTOLOAD`` environment variable is set.

    Raises:
        PluginError: a plugin implements a hook that does not exist (a misspelled hook fails here,
            at start-up, not silently at run time).
    """
    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if builtins:
        for module in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(module), name=module)
    if autoload is None:
        autoload = not os.environ.get(DISABLE_AUTOLOAD)
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; hooks are listed in scanflow_core.hookspecs") from exc
    return pm


_shared: dict[str, PluginManager] = {}
_shared_lock = threading.Lock()


def shared_plugin_manager() -> PluginManager:
    """This process's plugin manager for orchestrator tasks, made once (per setting of
    ``SCANFLOW_DISABLE_PLUGIN_AUTOLOAD``).

    An orchestrator runs many short tasks in one worker process; finding the entry points among the
    installed distributions takes longer than a trivial step. Sharing one manager is safe: plugins
    keep their per-run state on the run (``run.state``), not on themselves.
    """
    key = os.environ.get(DISABLE_AUTOLOAD, "")
    with _shared_lock:
        if key not in _shared:
            _shared[key] = get_plugin_manager()
        return _shared[key]


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each registered plugin: its name, where it comes from, and the hooks it implements."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        dist = dists.get(id(plugin))
        source = f"{dist.project_name} {dist.version}" if dist is not None else "built-in"
        if dist is None and not name.startswith("scanflow_core."):
            source = "registered"
        out.append({"name": name, "source": source, "hooks": hooks})
    return out
