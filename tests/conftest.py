"""Shared fixtures: a fresh plugin manager, a run home, and a helper that writes specs and step code."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scanflow_core.plugins import PluginManager, get_plugin_manager


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow tracker is off outside tests/tracking (which turns it back on): a fresh embedded
    store per test would cost seconds each."""
    monkeypatch.setenv("SCANFLOW_TRACKER", "off")


@pytest.fixture
def pm() -> PluginManager:
    """A fresh manager with the built-in plugins and no entry points."""
    return get_plugin_manager(autoload=False)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs live under the test's own folder."""
    path = tmp_path / ".scanflow"
    monkeypatch.setenv("SCANFLOW_HOME", str(path))
    return path


SpecWriter = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path) -> Iterator[SpecWriter]:
    """``write_spec(yaml_text, code=python_text, name="scanflow.yaml")`` → the spec's path.

    ``code`` becomes a module beside the spec, importable by ``call:`` under the name
    ``<test-unique>`` passed back as the placeholder ``MOD`` in the YAML text.
    """
    counter = {"n": 0}

    def write(
        spec: str, code: str | None = None, name: str = "scanflow.yaml", module: str | None = None
    ) -> Path:
        counter["n"] += 1
        mod = module or f"steps_{tmp_path.name.replace('-', '_')}_{counter['n']}"
        if code is not None:
            (tmp_path / f"{mod}.py").write_text(textwrap.dedent(code), encoding="utf-8")
        path = tmp_path / name
        path.write_text(textwrap.dedent(spec).replace("MOD", mod), encoding="utf-8")
        return path

    yield write
