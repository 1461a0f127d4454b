"""Shared fixtures: a fresh plugin manager, a run home, a helper that writes specs and step code, and
headless Chromium (Debian's chromium and chromium-driver, installed by scripts/chromium.sh; selenium
drives them). In CI (``CI=true``) a missing browser or driver fails a browser test; elsewhere it is
skipped with the reason."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------------------------ headless Chromium

ROOT = Path(__file__).resolve().parents[1]


def unavailable(reason: str) -> None:
    """Fail in CI (a real-browser test must never be skipped there), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """The chromium and chromedriver binaries (installed with apt-get when missing, as root)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "chromium.sh")], capture_output=True, text=True, timeout=1200
    )
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2:
        unavailable(f"scripts/chromium.sh failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return lines[0], lines[1]


@pytest.fixture
def browser_window() -> str:
    """The browser's window size (a module overrides this fixture for another size)."""
    return "1280,1000"


@pytest.fixture
def browser(chromium: tuple[str, str], browser_window: str, tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium session (selenium), quit after the test."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable(f"selenium is not installed ({exc}): pip install selenium")
    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={browser_window}")
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    session = webdriver.Chrome(service=service, options=options)  # selenium-manager not involved
    try:
        yield session
    finally:
        session.quit()
