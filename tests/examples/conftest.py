"""Headless Chromium for the demo's report test (Debian's chromium and chromium-driver, installed by
scripts/chromium.sh; selenium drives them). In CI (``CI=true``) a missing browser fails; elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable(f"selenium is not installed ({exc}): pip install selenium")
    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=driver, log_output=str(tmp_path / "chromedriver.log"))
    session = webdriver.Chrome(service=service, options=options)  # selenium-manager not involved
    try:
        yield session
    finally:
        session.quit()
