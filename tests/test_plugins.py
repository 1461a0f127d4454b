"""The plugin manager and the hook reference (datasette / pytest style)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from scanflow_core import hookspecs
from scanflow_core.errors import PluginError
from scanflow_core.plugins import (
    DEFAULT_PLUGINS,
    describe_plugins,
    get_plugin_manager,
    hookimpl,
)
from scanflow_core.records import Requirement
from scanflow_core.runner import run_workflow
from scanflow_core.spec import load_workflow

HOOKS = [name for name, obj in vars(hookspecs).items() if name.startswith("scanflow_") and callable(obj)]


def test_every_hook_is_prefixed_and_documented() -> None:
    assert len(HOOKS) >= 14
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 40, f"hook {name} needs a docstring that documents it"


def test_the_module_docstring_lists_every_hook_by_phase() -> None:
    listed = hookspecs.__doc__ or ""
    missing = [
        h
        for h in HOOKS
        if h.replace("scanflow_workflow_", "").replace("scanflow_step_", "") not in listed and h not in listed
    ]
    assert not missing


def test_builtins_register_like_third_party_plugins(pm: Any) -> None:
    names = [name for name, _ in pm.list_name_plugin()]
    assert names[: len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)


def test_an_inline_plugin_gets_the_hooks(write_spec: Any, home: Path) -> None:
    seen: list[str] = []

    class Plugin:
        @hookimpl
        def scanflow_step_start(self, step_run: Any) -> None:
            seen.append(f"start {step_run.name}")

        @hookimpl
        def scanflow_stage_requirements(self, stage: str) -> list[Requirement]:
            return [Requirement("tag", ("owner",), description="who owns it")] if stage == "training" else []

    pm = get_plugin_manager([Plugin()], autoload=False)
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: p
        steps:
          - {name: fit, stage: training, call: MOD:fit, params: {lr: 0.1}, outputs: {model: {kind: model}}}
        """,
        code="""
        def fit(model, lr):
            model.write_text("m")
            return {"loss": 0.5}
        """,
    )
    run = run_workflow(load_workflow(spec), pm=pm)
    assert seen == ["start fit"]
    report = run.step_summary("fit")["stage_metadata"]  # type: ignore[index]
    assert "tag 'owner' (who owns it)" in report["missing"]
    assert "at least one input (the training data (digests recorded))" in report["missing"]


def test_registering_a_class_says_to_register_an_instance(pm: Any) -> None:
    class Plugin:
        @hookimpl
        def scanflow_step_start(self, step_run: Any) -> None: ...

    with pytest.raises(TypeError, match=r"register an instance of it: pm.register\(Plugin\(\)\)"):
        pm.register(Plugin)


def test_a_misspelled_hook_fails_at_start_up() -> None:
    class Typo:
        @hookimpl
        def scanflow_step_strat(self, step_run: Any) -> None: ...

    with pytest.raises(PluginError, match="scanflow_step_strat"):
        get_plugin_manager([Typo()], autoload=False)


def test_a_hook_with_unknown_arguments_fails_at_register(pm: Any) -> None:
    class Wrong:
        @hookimpl
        def scanflow_step_start(self, step_run: Any, colour: str) -> None: ...

    with pytest.raises(PluginError, match="colour"):
        pm.register(Wrong())


def test_autoload_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(
        "pluggy.PluginManager.load_setuptools_entrypoints",
        lambda self, group, name=None: loaded.append(group) or 0,
    )
    monkeypatch.setenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")
    get_plugin_manager()
    assert loaded == []
    monkeypatch.delenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD")
    get_plugin_manager()
    assert loaded == ["scanflow.plugins"]


def test_describe_plugins_names_hooks(pm: Any) -> None:
    class Mine:
        @hookimpl
        def scanflow_track(self, run: Any, step_run: Any, batch: Any) -> None: ...

    pm.register(Mine(), name="mine")
    described = {p["name"]: p for p in describe_plugins(pm)}
    assert described["scanflow_core.runtimes.inprocess"]["hooks"] == ["scanflow_execute_step"]
    assert described["scanflow_core.stages"]["source"] == "built-in"
    assert described["mine"] == {"name": "mine", "source": "registered", "hooks": ["scanflow_track"]}
