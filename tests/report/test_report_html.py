"""The HTML report, read back with the standard library's parser: what each section shows, that every
text from the run is escaped, that pictures are embedded, and that attestation problems show."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from report_helpers import EVIL

from scanflow_core.errors import ScanflowError
from scanflow_core.report import build_report, write_report
from scanflow_core.report.collect import PNG_MAGIC, collect
from scanflow_core.runs import WorkflowRun


class Page(HTMLParser):
    """Every element with its attributes and the text directly inside it, and the whole text by id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self._row: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag in ("meta", "img", "br", "path", "rect", "input"):
            return
        self.stack.append((tag, attributes))
        if tag == "tr":
            self._row = []
            self.rows.append((attributes, self._row))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        while self.stack:
            top, _ = self.stack.pop()
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, attributes in self.stack:
            if attributes.get("id"):
                self.texts.setdefault(str(attributes["id"]), []).append(data)
        if self._row is not None and data.strip():
            self._row.append(data.strip())

    def text(self, element_id: str) -> str:
        return " ".join(" ".join(self.texts.get(element_id, [])).split())

    def rows_with(self, **wanted: str) -> list[list[str]]:
        return [
            cells
            for attributes, cells in self.rows
            if all(attributes.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]


@pytest.fixture(scope="module")
def page(finished_run: WorkflowRun) -> tuple[str, Page]:
    text = build_report(finished_run.directory)
    return text, Page(text)


@pytest.mark.slow
def test_the_steps_show_status_time_and_metrics(page: tuple[str, Page], finished_run: WorkflowRun) -> None:
    _, parsed = page

    rows = {cells[0]: cells for attributes, cells in parsed.rows if attributes.get("class") == "step"}
    assert list(rows) == ["make", "fit", "broken", "after", "guarded"]  # plan order
    assert [rows[n][2] for n in rows] == ["succeeded", "succeeded", "failed", "upstream_failed", "failed"]
    assert rows["make"][1] == "data_ingestion" and rows["make"][3].endswith(" s")
    assert "rows=300" in rows["make"]
    assert any("loss=0.25" in cell for cell in rows["fit"])
    assert any(cell.startswith("ValueError: <script>") for cell in rows["broken"])  # shown as text
    assert "upstream step 'broken' failed" in rows["after"]
    assert "1 failed" in rows["guarded"] and any("check" in cell for cell in rows["guarded"])
    badges = parsed.text("run-status")
    assert badges == "run failed"


@pytest.mark.slow
def test_checks_show_pass_warn_and_fail_with_their_messages(page: tuple[str, Page]) -> None:
    _, parsed = page

    checks = {
        (a.get("data-step"), a.get("data-check")): (a.get("class"), c)
        for a, c in parsed.rows
        if a.get("data-check")
    }
    drift_class, drift = checks[("make", "drift")]
    assert drift_class == "check warn" and "warn" in drift
    assert any(cell.startswith("drift in 120 samples") for cell in drift), drift
    shouty_class, shouty = checks[("make", "shouty")]
    assert shouty_class == "check warn" and f"bad news: {EVIL}" in shouty
    assert any("loudness=11" in cell for cell in shouty)
    blocking_class, blocking = checks[("guarded", "shouty")]
    assert blocking_class == "check fail" and blocking[2:5] == ["batch", "inputs", "fail"]


@pytest.mark.slow
def test_objectives_show_met_and_not_met(page: tuple[str, Page]) -> None:
    _, parsed = page

    fits = parsed.rows_with(data_objective="fits")[0]
    too_good = parsed.rows_with(data_objective="too_good")[0]
    assert fits[:4] == ["fits", "fit.loss < 1", "met", "fit.loss=0.25"]
    assert too_good[:3] == ["too_good", "(not blocking)", "fit.loss < 0"] and "NOT met" in too_good
    assert parsed.text("objectives").startswith("Objectives objective expression result observed fits")


@pytest.mark.slow
def test_drift_plots_are_embedded_as_png(page: tuple[str, Page], finished_run: WorkflowRun) -> None:
    _, parsed = page

    images = [a for tag, a in parsed.elements if tag == "img"]
    assert len(images) == 1
    source = str(images[0]["src"])
    assert source.startswith("data:image/png;base64,")
    embedded = base64.b64decode(source.split(",", 1)[1])
    on_disk = (finished_run.step_dir("make") / "checks" / "drift-batch.png").read_bytes()
    assert embedded == on_disk and embedded.startswith(PNG_MAGIC)


@pytest.mark.slow
def test_the_lineage_graph_is_inline_svg_coloured_by_status(page: tuple[str, Page]) -> None:
    text, parsed = page

    drawn = [a.get("data-step") for tag, a in parsed.elements if tag == "g" and a.get("class") == "step"]
    assert drawn == ["make", "fit", "broken", "after", "guarded"]
    assert '#lineage g.step[data-step="broken"] rect { fill: #ffebee; stroke: #c62828; }' in text
    assert '#lineage g.step[data-step="make"] rect { fill: #e8f5e9; stroke: #2e7d32; }' in text
    artifacts = {c[0]: c for a, c in parsed.rows if a.get("class") == "artifact"}
    assert set(artifacts) == {"reference", "batch", "model"}
    assert artifacts["batch"][3] == "guarded"  # read (and checked) before it failed
    assert artifacts["model"][1:4] == ["model", "fit", "broken"]  # "after" never ran, so never read it
    assert artifacts["reference"][3] == "fit"


@pytest.mark.slow
def test_the_attestations_are_verified(page: tuple[str, Page]) -> None:
    _, parsed = page

    assert parsed.text("verification").startswith("verified: ")
    attested = [c[0] for a, c in parsed.rows if a.get("class") == "attested"]
    assert attested == ["make", "fit"]  # the failed and blocked steps attest nothing


@pytest.mark.slow
def test_everything_from_the_run_is_escaped(page: tuple[str, Page]) -> None:
    text, parsed = page

    assert "<script" not in text.lower() and EVIL not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    tags = {tag for tag, _ in parsed.elements}
    assert "script" not in tags and "iframe" not in tags
    assert not [a for _, attributes in parsed.elements for a in attributes if a.startswith("on")]
    csp = [a.get("content") for tag, a in parsed.elements if tag == "meta" and a.get("http-equiv")]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]
    links = [a for tag, a in parsed.elements for k, a in a.items() if k in ("href", "src") and a]
    assert all(str(link).startswith(("data:image/png;base64,", "#")) for link in links), links


def copy_run(run: WorkflowRun, home: Path, keys: bool = True) -> Path:
    if keys:
        shutil.copytree(run.home / "keys", home / "keys")
    target = home / "runs" / run.run_id
    shutil.copytree(run.directory, target)
    return target


@pytest.mark.slow
def test_an_edited_output_fails_verification_in_the_report(finished_run: WorkflowRun, tmp_path: Path) -> None:
    copy = copy_run(finished_run, tmp_path)
    (copy / "steps" / "fit" / "outputs" / "model").write_text("other weights")

    parsed = Page(build_report(copy))

    assert parsed.text("verification") == "FAILED: 1 problem(s)"
    problems = parsed.text("attestation")
    assert "steps/fit/outputs/model : sha256" in problems and "(the file changed after the step)" in problems
    attested = {c[0]: c[-1] for a, c in parsed.rows if a.get("class") == "attested"}
    assert attested == {"make": "ok", "fit": "FAILED (1)"}


@pytest.mark.slow
def test_without_a_key_the_report_says_it_is_not_verified(finished_run: WorkflowRun, tmp_path: Path) -> None:
    copy = copy_run(finished_run, tmp_path, keys=False)

    parsed = Page(build_report(copy))

    assert parsed.text("verification").startswith("not verified: no public key to verify")
    assert Page(build_report(copy, verify=False)).text("verification") == "not verified: not verified"


@pytest.mark.slow
def test_a_plot_outside_the_run_is_never_read(finished_run: WorkflowRun, tmp_path: Path) -> None:
    copy = copy_run(finished_run, tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG_MAGIC + b"not yours")
    checks = copy / "steps" / "make" / "checks.json"
    results: list[dict[str, Any]] = json.loads(checks.read_text())
    results[0]["details"]["artifacts"] = [str(secret), str(copy / "steps" / "make" / "checks.json.png")]
    checks.write_text(json.dumps(results))

    data = collect(copy, verify=False)

    assert [(p.path, p.data, p.note) for p in data.plots] == [
        ("secret.png", "", "not embedded: the file is not in the run directory"),
        ("checks.json.png", "", "not embedded: the file is not in the run directory"),
    ]
    assert base64.b64encode(b"not yours").decode() not in build_report(copy, verify=False)


@pytest.mark.slow
def test_a_run_that_moved_finds_its_plots_and_a_missing_spec_is_said(
    finished_run: WorkflowRun, tmp_path: Path
) -> None:
    copy = copy_run(finished_run, tmp_path)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["spec"] = str(tmp_path / "gone" / "scanflow.yaml")
    (copy / "run.json").write_text(json.dumps(manifest))

    data = collect(copy)

    assert data.lineage_svg is None and "is not here any more: no graph to draw" in data.lineage_note
    assert [p.path for p in data.plots] == ["steps/make/checks/drift-batch.png"] and data.plots[0].data
    assert set(data.steps) == {"make", "fit", "broken", "after", "guarded"}  # by start time, without the plan
    assert next(iter(data.steps)) == "make"
    assert not data.verification.ok  # the spec is not there to check
    assert re.search(r"no graph: see below", build_report(copy))


def test_a_folder_that_is_no_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScanflowError, match=r"is not a run directory \(no readable run.json\)"):
        collect(tmp_path)
    (tmp_path / "run.json").write_text("[]")
    with pytest.raises(ScanflowError, match=r"is not a run directory"):
        write_report(tmp_path)
