"""The report as a person sees it: opened from disk in headless Chromium (Debian's chromium and
chromium-driver, installed by scripts/chromium.sh) through selenium.

In CI (``CI=true``) a missing browser or driver fails the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scanflow_core.report import write_report
from scanflow_core.runs import WorkflowRun


def shown(browser: Any, css: str) -> list[str]:
    """The text Chromium renders for each element matching ``css`` (what a person reads)."""
    from selenium.webdriver.common.by import By

    return [element.text for element in browser.find_elements(By.CSS_SELECTOR, css)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_report_shows_steps_checks_objectives_plots_lineage_and_verification(
    browser: Any, finished_run: WorkflowRun, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    report = write_report(finished_run.directory, tmp_path / "report.html")
    browser.get(report.as_uri())

    assert browser.title == f"Scanflow run {finished_run.run_id} of report_demo"
    assert shown(browser, "#run-status") == ["run failed"]
    steps = shown(browser, "#steps tr.step")
    assert [row.split()[0] for row in steps] == ["make", "fit", "broken", "after", "guarded"]
    assert "failed" in steps[2] and "ValueError: <script>alert('x')</script>" in steps[2]  # text, not code
    statuses = shown(browser, "#steps tr.step td.status")
    assert statuses == ["succeeded", "succeeded", "failed", "upstream_failed", "failed"]

    checks = {tuple(row.split()[:2]): row for row in shown(browser, "#checks tr.check")}
    assert set(checks) == {("make", "drift"), ("make", "shouty"), ("guarded", "shouty")}
    drift, shouty = checks[("make", "drift")], checks[("make", "shouty")]
    assert " warn " in drift and "drift in 120 samples" in drift
    assert "bad news: <script>alert('x')</script><img src=x onerror=alert(1)>" in shouty
    failed = shown(browser, "#checks tr.check.fail")
    assert failed == [checks[("guarded", "shouty")]] and " batch inputs fail bad news: <script>" in failed[0]

    def colour(css: str) -> str:
        return str(browser.find_element(By.CSS_SELECTOR, css).value_of_css_property("color"))

    assert colour("#checks tr.check.warn td.verdict") == "rgba(230, 81, 0, 1)"  # orange, not the pass green
    assert colour("#checks tr.check.fail td.verdict") == "rgba(183, 28, 28, 1)"  # red

    objectives = shown(browser, "#objectives tr.objective td.verdict")
    assert objectives == ["met", "NOT met"]
    assert shown(browser, "#objectives tr.objective")[0].startswith("fits fit.loss < 1 met")

    image = browser.find_element(By.CSS_SELECTOR, "#plots img")
    loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
    assert loaded == 640  # the drift checker's 6.4 in x 100 dpi histogram, decoded from the page itself

    boxes = browser.find_elements(By.CSS_SELECTOR, "#lineage svg g.step rect")
    assert len(boxes) == 5 and all(box.size["width"] > 0 for box in boxes)
    fills = [b.value_of_css_property("fill") for b in boxes]
    assert (
        fills[0] == "rgb(232, 245, 233)" and fills[2] == "rgb(255, 235, 238)"
    )  # succeeded green, failed red

    verification = shown(browser, "#verification")[0]
    assert verification.startswith("verified: ") and "signed statements" in verification
    assert [row.split()[0] for row in shown(browser, "#attestation tr.attested")] == ["make", "fit"]
    assert browser.execute_script("return document.scripts.length") == 0
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
