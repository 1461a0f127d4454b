"""The ``scanflow`` command, called in process through ``cli.main`` and, twice, as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scanflow_core import __version__
from scanflow_core.cli import main

REPO = Path(__file__).resolve().parents[1]

TINY = """\
apiVersion: scanflow/v1
name: tiny
params: {n: 10}
objectives: ["sum.total >= 45"]
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - {name: sum, stage: training, call: MOD:total, inputs: [data], outputs: {result: {kind: model}}}
  - name: shell
    stage: evaluation
    command: "sh -c 'cat {inputs.result} && echo {params.n}'"
    inputs: {result: result}
"""

TINY_CODE = """\
def make(n, data):
    data.write_text("\\n".join(str(i) for i in range(n)))
    return {"rows": n}


def total(data, result):
    value = sum(int(x) for x in data.read_text().split())
    result.write_text(f"{value}\\n")
    return {"total": value}
"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | os.PathLike[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def manifest_from(stdout: str) -> dict[str, Any]:
    """``run --json`` prints the summary, then the manifest: the JSON starts at the first ``{`` line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line == "{")
    data: dict[str, Any] = json.loads("\n".join(lines[start:]))
    return data


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table, by step name: ``{"make": ["make", "data_ingestion", "succeeded", ...]}``."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["step", "stage", "status"])
    rows = {}
    for line in lines[header + 1 :]:
        cells = line.split()
        if not line.startswith("  ") or not cells or cells[0] == "!":
            break
        rows[cells[0]] = cells
    return rows


def subprocess_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, SCANFLOW_HOME=str(home), SCANFLOW_DISABLE_PLUGIN_AUTOLOAD="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


# ------------------------------------------------------------------------------------------------------ run


def test_run_prints_the_step_table_and_objectives(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, err = run_cli(capsys, "run", spec)

    assert code == 0, err
    rows = table_rows(out)
    assert list(rows) == ["make", "sum", "shell"]
    assert rows["make"][1:3] == ["data_ingestion", "succeeded"]
    assert rows["sum"][1:3] == ["training", "succeeded"]
    assert "total=45" in rows["sum"]
    assert rows["shell"][1:3] == ["evaluation", "succeeded"]
    assert "of 'tiny': succeeded" in out
    assert "objectives:\n  ✓ sum.total >= 45: met (sum.total >= 45; sum.total=45.0)" in out
    assert "[3/3] ✓ shell succeeded" in err


def test_run_as_a_real_process_exits_0(write_spec, tmp_path):
    spec = write_spec(TINY, TINY_CODE)
    home = tmp_path / "home"

    done = subprocess.run(
        [sys.executable, "-m", "scanflow_core", "run", str(spec)],
        capture_output=True,
        text=True,
        env=subprocess_env(home),
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert table_rows(done.stdout)["shell"][2] == "succeeded"
    (run_dir,) = (home / "runs").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"
    # the shell step saw the sum's output and the param
    assert (run_dir / "steps" / "shell" / "step.log").read_text().split() == ["45", "10"]


FAILING = """\
apiVersion: scanflow/v1
name: failing
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - {name: boom, stage: training, call: MOD:boom, inputs: [data], outputs: [model]}
  - {name: judge, stage: evaluation, call: MOD:judge, inputs: {model: model}}
  - {name: side, stage: data_analysis, call: MOD:side, inputs: [data]}
"""

FAILING_CODE = """\
def make(data):
    data.write_text("1 2 3")


def boom(data, model):
    print("about to fail")
    raise ValueError("the data is bad")


def judge(model):
    raise AssertionError("judge must not run when boom failed")


def side(data):
    return {"mean": 2.0}
"""


def test_run_exits_1_when_a_step_fails(write_spec, home, capsys):
    spec = write_spec(FAILING, FAILING_CODE)

    code, out, err = run_cli(capsys, "run", spec)

    assert code == 1
    rows = table_rows(out)
    assert rows["make"][2] == "succeeded"
    assert rows["boom"][2] == "failed"
    assert rows["judge"][2] == "upstream_failed"
    assert rows["side"][2] == "succeeded"  # an independent branch still runs
    assert "boom failed: ValueError: the data is bad" in out
    (run_dir,) = (home / "runs").iterdir()
    log = run_dir / "steps" / "boom" / "step.log"
    assert f"log: {log}" in out
    assert "about to fail" in log.read_text()
    assert "ValueError: the data is bad" in log.read_text()
    assert "✗ judge upstream_failed" in err
    assert "upstream step 'boom' failed" in err


BAD_SPEC = """\
apiVersion: scanflow/v1
name: bad
steps:
  - {name: make, stage: data_ingestoin, call: MOD:make}
"""


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_bad_spec_exits_2_without_a_traceback(write_spec, home, capsys, command):
    spec = write_spec(BAD_SPEC)

    code, out, err = run_cli(capsys, command, spec)

    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {spec}:4: steps[0].stage: unknown stage 'data_ingestoin'")
    assert "did you mean 'data_ingestion'?" in err
    assert "Traceback" not in err
    assert not home.exists()  # nothing ran


def test_a_bad_spec_as_a_real_process_exits_2_without_a_traceback(write_spec, tmp_path):
    spec = write_spec(BAD_SPEC)

    done = subprocess.run(
        [sys.executable, "-m", "scanflow_core", "run", str(spec)],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path / "home"),
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 2
    assert "unknown stage 'data_ingestoin'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_an_unknown_param_override_exits_2(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, _, err = run_cli(capsys, "run", spec, "--param", "m=3")

    assert code == 2
    assert "unknown parameter 'm'" in err
    assert "Traceback" not in err


def test_an_unknown_step_exits_2(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, _, err = run_cli(capsys, "run", spec, "--step", "summ")

    assert code == 2
    assert "no step named 'summ'" in err
    assert "did you mean 'sum'?" in err


def test_resuming_an_unknown_run_exits_2(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, _, err = run_cli(capsys, "run", spec, "--resume", "20990101-000000-abcdef")

    assert code == 2
    assert "no run '20990101-000000-abcdef' to resume" in err


def test_an_unmet_blocking_objective_exits_3(write_spec, home, capsys):
    spec = write_spec(TINY.replace("sum.total >= 45", "sum.total >= 1000"), TINY_CODE)

    code, out, _ = run_cli(capsys, "run", spec)

    assert code == 3
    assert all(row[2] == "succeeded" for row in table_rows(out).values())
    assert "✗ sum.total >= 1000: NOT met (sum.total >= 1000; sum.total=45.0)" in out


def test_an_unmet_non_blocking_objective_exits_0(write_spec, home, capsys):
    objective = '{expr: "sum.total >= 1000", blocking: false}'
    spec = write_spec(TINY.replace('"sum.total >= 45"', objective), TINY_CODE)

    code, out, _ = run_cli(capsys, "run", spec)

    assert code == 0
    assert "✗ sum.total >= 1000: NOT met" in out


# -------------------------------------------------------------------------------------------------- options


def test_param_overrides_reach_the_steps(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, err = run_cli(capsys, "run", spec, "--param", "n=20", "--json")

    assert code == 0, err
    manifest = manifest_from(out)
    assert manifest["params"] == {"n": 20}
    assert manifest["steps"]["make"]["metrics"] == {"rows": 20.0}
    assert manifest["steps"]["sum"]["metrics"] == {"total": 190.0}
    shell_log = home / "runs" / manifest["run_id"] / "steps" / "shell" / "step.log"
    assert shell_log.read_text().split() == ["190", "20"]


def test_step_runs_only_it_and_its_upstream(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, err = run_cli(capsys, "run", spec, "--step", "sum", "--json")

    assert code == 0, err
    assert list(table_rows(err)) == ["make", "sum"]  # with --json the summary goes to stderr
    manifest = json.loads(out)  # and stdout is the manifest alone
    assert set(manifest["steps"]) == {"make", "sum"}
    assert "shell" not in err
    assert "[2/2] ✓ sum succeeded" in err


def test_resume_reuses_complete_steps_and_reruns_one_whose_output_is_gone(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    code, out, _ = run_cli(capsys, "run", spec, "--param", "n=20", "--json")
    assert code == 0
    run_id = manifest_from(out)["run_id"]

    code, out, err = run_cli(capsys, "run", spec, "--resume", run_id, "--json")

    assert code == 0, err
    for name in ("make", "sum", "shell"):
        assert f"↺ {name} reused from run {run_id}" in err
    assert "▶" not in err
    manifest = manifest_from(out)
    assert manifest["run_id"] == run_id
    assert manifest["params"] == {"n": 20}  # resumed with the run's own overrides
    assert list((home / "runs").iterdir()) == [home / "runs" / run_id]

    (home / "runs" / run_id / "steps" / "make" / "outputs" / "data").unlink()
    code, out, err = run_cli(capsys, "run", spec, "--resume", run_id)

    assert code == 0, err
    assert "▶ make (data_ingestion)" in err
    assert "↺ make reused" not in err
    assert "↺ sum reused" in err  # its output is still there, and make wrote the same data again
    assert (home / "runs" / run_id / "steps" / "make" / "outputs" / "data").read_text().split()[-1] == "19"


def test_resume_with_other_params_does_not_reuse_steps_made_with_the_old_ones(write_spec, home, capsys):
    """BUG (runner.py ``_complete``): a resumed step counts as complete whatever params made it.

    Resuming with ``--param n=5`` a run made with ``n=20`` reuses every step and reports
    ``rows=20``. Either refusing the new params (exit 2) or re-running the steps whose params
    changed would be right; silently mixing the two is not.
    """
    spec = write_spec(TINY, TINY_CODE)
    code, out, _ = run_cli(capsys, "run", spec, "--param", "n=20", "--json")
    assert code == 0
    run_id = manifest_from(out)["run_id"]

    code, out, err = run_cli(capsys, "run", spec, "--resume", run_id, "--param", "n=5", "--json")

    if code == 2:
        assert "n" in err and "Traceback" not in err
    else:
        assert "↺ make reused" not in err
        assert manifest_from(out)["steps"]["make"]["metrics"] == {"rows": 5.0}


PARALLEL = """\
apiVersion: scanflow/v1
name: pair
steps:
  - {name: left, stage: data_analysis, call: MOD:left}
  - {name: right, stage: data_analysis, call: MOD:right}
"""

# Both steps meet at a barrier that waits a bounded time: with one worker the second step cannot
# start while the first waits, so the barrier breaks and both say they did not overlap.
PARALLEL_CODE = """\
import threading

BARRIER = threading.Barrier(2, timeout=0.5)


def _meet():
    try:
        BARRIER.wait()
    except threading.BrokenBarrierError:
        return {"overlapped": 0}
    return {"overlapped": 1}


def left():
    return _meet()


def right():
    return _meet()
"""


@pytest.mark.parametrize(("argv", "overlapped"), [((), 1.0), (("--max-parallel", "1"), 0.0)])
def test_max_parallel_bounds_the_steps_running_at_once(write_spec, home, capsys, argv, overlapped):
    spec = write_spec(PARALLEL, PARALLEL_CODE)

    code, out, err = run_cli(capsys, "run", spec, *argv, "--json")

    assert code == 0, err
    steps = manifest_from(out)["steps"]
    assert {steps[n]["metrics"]["overlapped"] for n in ("left", "right")} == {overlapped}


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_max_parallel_must_be_a_positive_integer(write_spec, home, capsys, value):
    spec = write_spec(PARALLEL, PARALLEL_CODE)

    with pytest.raises(SystemExit) as exited:
        main(["run", str(spec), "--max-parallel", value])

    assert exited.value.code == 2
    assert "--max-parallel" in capsys.readouterr().err
    assert not home.exists()


def test_json_prints_the_manifest(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, _ = run_cli(capsys, "run", spec, "--json", "--quiet")

    assert code == 0
    manifest = manifest_from(out)
    run_dir = home / "runs" / manifest["run_id"]
    assert manifest == json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["workflow"] == "tiny"
    assert [o["passed"] for o in manifest["objectives"]] == [True]
    assert manifest["steps"]["sum"]["outputs"]["result"]["kind"] == "model"


def test_quiet_prints_no_progress(write_spec, home, capsys):
    spec = write_spec(TINY, TINY_CODE)
    assert run_cli(capsys, "keys", "generate")[0] == 0  # else the run says on stderr that it made one

    code, out, err = run_cli(capsys, "run", spec, "--quiet")

    assert code == 0
    assert err == ""
    assert "step" in out


# ------------------------------------------------------------------------------------------- other commands


def test_validate_prints_an_ok_line(write_spec, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, err = run_cli(capsys, "validate", spec)

    assert code == 0, err
    assert out == f"{spec}: ok — workflow 'tiny', 3 steps in 3 levels, 1 objective(s)\n"


def test_schema_prints_a_json_schema(capsys):
    code, out, _ = run_cli(capsys, "schema")

    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"apiVersion", "name", "steps"} <= set(schema["required"])


BUILTINS = {
    "scanflow_core.runtimes.inprocess": ["scanflow_execute_step"],
    "scanflow_core.runtimes.local": ["scanflow_execute_step"],
    "scanflow_core.stages": ["scanflow_stage_requirements"],
    "scanflow_core.checking.builtin": ["scanflow_check", "scanflow_checker_names"],
    "scanflow_core.attestation.plugin": [
        "scanflow_attest_step",
        "scanflow_sign",
        "scanflow_step_start",
        "scanflow_workflow_finish",
    ],
}


def test_plugins_lists_the_builtins_and_their_hooks(capsys, monkeypatch):
    monkeypatch.setenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")

    code, out, _ = run_cli(capsys, "plugins")

    assert code == 0
    lines = out.splitlines()
    for name, hooks in BUILTINS.items():
        at = next(i for i, line in enumerate(lines) if line.split() == [name, "built-in"])
        assert [line.strip() for line in lines[at + 1 : at + 1 + len(hooks)]] == hooks
    from scanflow_core.plugins import DEFAULT_PLUGINS

    assert len([line for line in lines if not line.startswith(" ")]) == len(DEFAULT_PLUGINS)


def test_plugins_json(capsys, monkeypatch):
    monkeypatch.setenv("SCANFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")

    code, out, _ = run_cli(capsys, "plugins", "--json")

    assert code == 0
    described = {p["name"]: p["hooks"] for p in json.loads(out)}
    from scanflow_core.plugins import DEFAULT_PLUGINS

    assert set(described) == set(DEFAULT_PLUGINS)
    assert {name: described[name] for name in BUILTINS} == BUILTINS
    assert {p["source"] for p in json.loads(out)} == {"built-in"}


def mermaid_edges(text: str) -> set[tuple[str, str]]:
    """The edges of a mermaid flowchart, by the step name each node's label starts with."""
    labels = dict(re.findall(r'^\s*(\w+)[\[(]+"(\w+)', text, re.MULTILINE))
    edges = re.findall(r"^\s*(\w+)\s*-->(?:\|[^|]*\|)?\s*(\w+)", text, re.MULTILINE)
    return {(labels[a], labels[b]) for a, b in edges}


def test_graph_prints_mermaid(write_spec, capsys):
    spec = write_spec(TINY, TINY_CODE)

    code, out, err = run_cli(capsys, "graph", spec)

    assert code == 0, err
    assert out.split()[0] in ("flowchart", "graph")
    assert mermaid_edges(out) == {("make", "sum"), ("sum", "shell")}


def test_graph_writes_mermaid_to_a_file(write_spec, tmp_path, capsys):
    spec = write_spec(TINY, TINY_CODE)
    target = tmp_path / "graph.mmd"

    code, out, err = run_cli(capsys, "graph", spec, "--output", target)

    assert code == 0, err
    assert out == ""
    assert f"wrote {target}" in err
    assert mermaid_edges(target.read_text()) == {("make", "sum"), ("sum", "shell")}


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"scanflow {__version__}\n"
