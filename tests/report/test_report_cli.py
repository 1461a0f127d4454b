"""``scanflow report RUN [-o FILE]``: a run directory, a run id or ``latest``; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanflow_core.cli import main
from scanflow_core.runs import WorkflowRun


@pytest.mark.slow
def test_report_of_a_run_directory_to_a_file(
    finished_run: WorkflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "report.html"

    assert main(["report", str(finished_run.directory), "-o", str(out)]) == 0

    assert out.read_text().startswith("<!DOCTYPE html>")
    assert capsys.readouterr().out == (
        f"wrote {out}: run {finished_run.run_id} failed, 5 steps, checks 0 passed / 2 warned / 1 failed, "
        "objectives 1/2 met, attestations verified\n"
    )


@pytest.mark.slow
def test_report_by_run_id_and_latest_under_a_home(
    finished_run: WorkflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(finished_run.home)

    assert main(["report", finished_run.run_id, "--home", home, "-o", str(tmp_path / "a.html")]) == 0
    assert main(["report", "latest", "--home", home, "--no-verify"]) == 0

    written = finished_run.directory / "report.html"  # the default place
    assert written.is_file() and "not verified: not verified" in written.read_text()
    assert (tmp_path / "a.html").read_text().count('id="verification" class="ok"') == 1
    assert capsys.readouterr().out.splitlines()[1].endswith("attestations NOT verified")


def test_what_is_no_run_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nowhere"), "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: RUN '{tmp_path / 'nowhere'}' is no run directory (no run.json in ")
    assert "give a run directory, a run id or 'latest'" in err

    assert main(["report", "latest", "--home", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err
        == f"error: no runs under {tmp_path / 'runs'} (RUN 'latest' is the newest run there)\n"
    )


def test_the_command_is_listed() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
