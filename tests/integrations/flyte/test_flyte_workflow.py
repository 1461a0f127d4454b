"""Scanflow workflows as flytekit workflows (``workflow_from_spec``), run by flytekit's local execution."""

from __future__ import annotations

import json
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from flyte_helpers import FLYTEKIT_CHECKPOINT_WARNING

from scanflow_core.conformance import AdapterConformance

pytestmark = [pytest.mark.flyte, pytest.mark.filterwarnings(FLYTEKIT_CHECKPOINT_WARNING)]

SMALL = """\
apiVersion: scanflow/v1
name: small
params: {rows: 5, fail: false}
objectives:
  - {name: counted, expr: "count.n >= 3"}
steps:
  - {name: make, stage: data_ingestion, call: STEPS:make, outputs: [table]}
  - {name: count, stage: evaluation, call: STEPS:count, inputs: [table]}
  - {name: side, stage: logging, call: STEPS:side, outputs: [note]}
"""

SMALL_STEPS = """\
def make(table, rows, fail):
    if fail:
        raise RuntimeError("make was told to fail")
    table.write_text("x\\n" * rows)
    return {"rows": rows}


def count(table):
    return {"n": len(table.read_text().splitlines())}


def side(note):
    note.write_text("independent")
"""


def _write_small(folder: Path, spec: str = SMALL) -> Path:
    module = f"small_steps_{folder.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(SMALL_STEPS, encoding="utf-8")
    path = folder / "scanflow.yaml"
    path.write_text(spec.replace("STEPS", module), encoding="utf-8")
    return path


def _run_dir(home: Path, run_id: str) -> Path:
    return home / "runs" / run_id


def _steps(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    run_dir = _run_dir(home, run_id)
    return {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*/step.json")}


def _manifest(home: Path, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((_run_dir(home, run_id) / "run.json").read_text())
    return data


def test_an_execution_is_one_scanflow_run(tmp_path: Path) -> None:
    from scanflow_flyte import workflow_from_spec

    home = tmp_path / "home"
    wf = workflow_from_spec(_write_small(tmp_path), home=home)

    assert wf(run_id="nightly") == "nightly"  # the workflow's output is the run id
    steps = _steps(home, "nightly")
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(["make", "count", "side"], "succeeded")
    assert steps["make"]["outputs"]["table"]["digest"].startswith("sha256:")
    assert steps["count"]["metrics"] == {"n": 5.0}
    manifest = _manifest(home, "nightly")
    assert manifest["status"] == "succeeded" and manifest["orchestrator"] == "flyte"
    assert set(manifest["steps"]) == {"make", "count", "side"}
    assert [o["name"] for o in manifest["objectives"] if o["passed"]] == ["counted"]


def test_each_local_execution_gets_a_run_of_its_own(tmp_path: Path) -> None:
    from scanflow_flyte import workflow_from_spec

    home = tmp_path / "home"
    wf = workflow_from_spec(_write_small(tmp_path), home=home)
    first, second = wf(), wf()

    assert first != second and first.startswith("local-") and second.startswith("local-")
    assert _manifest(home, first)["status"] == _manifest(home, second)["status"] == "succeeded"


def test_a_failing_step_fails_the_workflow_and_the_rest_runs_on(tmp_path: Path) -> None:
    from scanflow_flyte import ScanflowStepFailed, workflow_from_spec

    home = tmp_path / "home"
    wf = workflow_from_spec(_write_small(tmp_path), home=home, params={"fail": True})
    with pytest.raises(ScanflowStepFailed) as raised:
        wf(run_id="broken")

    assert raised.value.step == "make" and raised.value.run_id == "broken"
    assert "make was told to fail" in raised.value.reason
    steps = _steps(home, "broken")
    assert steps["make"]["status"] == "failed"
    assert steps["count"]["status"] == "upstream_failed"  # recorded by the failure node
    assert steps["side"]["status"] == "succeeded"  # FAIL_AFTER_EXECUTABLE_NODES_COMPLETE
    assert _manifest(home, "broken")["status"] == "failed"


def test_a_failing_check_fails_the_task_and_names_the_check(tmp_path: Path, failing_checker: str) -> None:
    from scanflow_flyte import ScanflowCheckFailed, workflow_from_spec

    spec = SMALL.replace(
        "outputs: [table]}", "outputs: [table], checks: [{use: always_fails, on: [table], policy: fail}]}"
    )
    home = tmp_path / "home"
    wf = workflow_from_spec(_write_small(tmp_path, spec), home=home)
    with pytest.raises(ScanflowCheckFailed) as raised:
        wf(run_id="checked")

    assert raised.value.failed_checks == ["always_fails on table"]
    assert "always_fails on table: table is never good enough" in str(raised.value)
    steps = _steps(home, "checked")
    assert steps["make"]["status"] == "failed" and steps["make"]["checks"]["failed"] == 1
    assert steps["count"]["status"] == "upstream_failed"
    assert _manifest(home, "checked")["status"] == "failed"


def test_a_blocking_objective_that_does_not_hold_fails_the_last_node(tmp_path: Path) -> None:
    from scanflow_flyte import ScanflowRunFailed, workflow_from_spec

    home = tmp_path / "home"
    wf = workflow_from_spec(_write_small(tmp_path), home=home, params={"rows": 2})
    with pytest.raises(ScanflowRunFailed, match="objective counted not met"):
        wf(run_id="short")
    assert _manifest(home, "short")["status"] == "succeeded"  # every step did; the objective did not hold
    assert _manifest(home, "short")["objectives"][0]["passed"] is False


def test_what_needs_a_skipped_step_is_skipped_too(tmp_path: Path) -> None:
    from scanflow_flyte import workflow_from_spec

    spec = SMALL.replace("call: STEPS:make,", "call: STEPS:make, when: 'params.rows > 10',")
    spec = spec.replace('objectives:\n  - {name: counted, expr: "count.n >= 3"}\n', "")
    home = tmp_path / "home"
    workflow_from_spec(_write_small(tmp_path, spec), home=home)(run_id="skipping")

    steps = _steps(home, "skipping")
    assert steps["make"]["status"] == "skipped" and "params.rows > 10" in steps["make"]["reason"]
    assert steps["count"]["status"] == "skipped"
    assert steps["count"]["reason"] == "upstream step 'make' was skipped"
    assert steps["side"]["status"] == "succeeded"
    assert _manifest(home, "skipping")["status"] == "succeeded"


def test_a_step_is_retried_locally_as_often_as_its_retries(tmp_path: Path) -> None:
    from scanflow_flyte import workflow_from_spec

    (tmp_path / "flaky_steps.py").write_text(
        textwrap.dedent(
            """\
            from pathlib import Path

            def flaky(marker):
                if not Path(marker).exists():
                    Path(marker).write_text("tried")
                    raise RuntimeError("first attempt fails")
                return {"ok": 1}
            """
        )
    )
    marker = tmp_path / "marker"
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(
        "apiVersion: scanflow/v1\nname: flaky\nsteps:\n"
        f"  - {{name: flaky, stage: training, call: flaky_steps:flaky, retries: 1, params: {{marker: '{marker}'}}}}\n"
    )
    home = tmp_path / "home"
    workflow_from_spec(spec, home=home)(run_id="retried")

    step = _steps(home, "retried")["flaky"]
    assert step["status"] == "succeeded" and step["attempt"] == 2


def test_nested_workflows_and_dependencies_become_nodes(tmp_path: Path) -> None:
    from scanflow_flyte import ScanflowStepTask, workflow_from_spec

    (tmp_path / "prep.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: scanflow/v1
            name: prep
            inputs: {raw: {}}
            steps:
              - {name: clean, stage: data_transformation, call: m:clean, inputs: [raw], outputs: [cleaned]}
            """
        )
    )
    spec = tmp_path / "scanflow.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            apiVersion: scanflow/v1
            name: outer
            steps:
              - {name: ingest, stage: data_ingestion, call: m:ingest, outputs: [raw]}
              - {name: prep, stage: data_transformation, workflow: prep.yaml, inputs: {raw: raw}}
              - {name: train, stage: training, call: m:train, inputs: {data: prep.cleaned}, retries: 2, timeout: 90}
            """
        )
    )
    wf = workflow_from_spec(spec, name="outer_flow")

    assert wf.name == "outer_flow"
    nodes = {n.id: n for n in wf.nodes}
    assert list(nodes) == ["ingest", "prep-clean", "train", "scanflow-finish"]
    clean = nodes["prep-clean"].flyte_entity
    assert isinstance(clean, ScanflowStepTask) and clean.step == "prep.clean"
    assert clean.name == "outer_flow.prep.clean"
    assert [u.id for u in nodes["prep-clean"].upstream_nodes] == ["ingest"]
    assert [u.id for u in nodes["train"].upstream_nodes] == ["prep-clean"]
    assert {u.id for u in nodes["scanflow-finish"].upstream_nodes} == {"ingest", "prep-clean", "train"}
    train = nodes["train"].flyte_entity
    assert train.metadata.retries == 2 and train.metadata.timeout.total_seconds() == 90
    assert wf.python_interface.inputs_with_defaults == {"run_id": (str, "")}


def test_bad_input_is_named(tmp_path: Path) -> None:
    from scanflow_core.errors import ScanflowError, SpecError
    from scanflow_flyte import workflow_from_spec

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: scanflow/v1\nname: bad\nsteps:\n  - {name: s, stage: cooking, call: m:f}\n")
    with pytest.raises(SpecError, match=r"bad\.yaml.*steps\[0\]\.stage"):
        workflow_from_spec(bad)
    finish = tmp_path / "finish.yaml"
    finish.write_text(
        "apiVersion: scanflow/v1\nname: f\nsteps:\n  - {name: scanflow_finish, stage: logging, call: m:f}\n"
    )
    with pytest.raises(ScanflowError, match="may not be named 'scanflow_finish'"):
        workflow_from_spec(finish)
    wf = workflow_from_spec(_write_small(tmp_path), home=tmp_path / "home")
    with pytest.raises(ValueError, match=r"run_id 'no/slashes' may only hold letters"):
        wf(run_id="no/slashes")


def test_the_serialized_workflow_runs_on_any_flyte_cluster(tmp_path: Path) -> None:
    """What ``pyflyte register`` sends: python tasks that the Scanflow resolver rebuilds in a pod,
    the closing task as the failure node, and a step with an image as a raw container."""
    from flytekit.configuration import Image, ImageConfig, SerializationSettings
    from flytekit.models.task import Resources
    from flytekit.tools.translator import get_serializable

    from scanflow_flyte import workflow_from_spec
    from scanflow_flyte.step_tasks import resolver

    spec = _write_small(
        tmp_path,
        SMALL
        + '  - {name: boxed, stage: logging, image: "python:3.11", command: "wc -l {inputs.table} > {outputs.lines}",'
        " inputs: [table], outputs: [lines], resources: {cpu: 1.5, memory: 512Mi}}\n",
    )
    wf = workflow_from_spec(spec, params={"rows": 4}, home=tmp_path / "home")
    settings = SerializationSettings(
        image_config=ImageConfig(default_image=Image(name="default", fqn="registry/scanflow", tag="1")),
        project="p",
        domain="d",
        version="v1",
    )
    entities: OrderedDict[Any, Any] = OrderedDict()
    serialized = get_serializable(entities, settings, wf)

    assert serialized.template.failure_node is not None
    tasks = {
        e.template.id.name: e.template
        for e in entities.values()
        if hasattr(e, "template") and hasattr(e.template, "type")
    }
    make = tasks["small.make"]
    assert make.type == "python-task"
    args = list(make.container.args)
    assert args[args.index("--resolver") + 1] == "scanflow_flyte.step_tasks.resolver"
    loader_args = args[args.index("--") + 1 :]
    rebuilt = resolver.load_task(loader_args)
    assert rebuilt.step == "make" and rebuilt.step_config.params == {"rows": 4}
    assert rebuilt.step_config.spec == str(spec.absolute())
    finish = list(tasks["small.scanflow_finish"].container.args)
    assert finish[finish.index("--") + 1 :][:2] == ["kind", "finish"]
    boxed = tasks["small.boxed"]
    assert boxed.type == "raw-container"
    assert boxed.container.image == "python:3.11"
    assert list(boxed.container.command) == [
        "wc",
        "-l",
        "/scanflow/inputs/table",
        ">",
        "/scanflow/outputs/lines",
    ]
    requests = {r.name: r.value for r in boxed.container.resources.requests}
    assert requests == {Resources.ResourceName.CPU: "1.5", Resources.ResourceName.MEMORY: str(512 * 2**20)}


def test_with_pod_templates_an_image_step_runs_the_step_path_in_its_pod(tmp_path: Path) -> None:
    from collections import OrderedDict

    from flytekit.configuration import Image, ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    from scanflow_flyte import ScanflowContainerTask, workflow_from_spec

    spec = _write_small(
        tmp_path,
        SMALL
        + '  - {name: boxed, stage: logging, image: "python:3.11", command: "wc -l {inputs.table} > {outputs.lines}",'
        " inputs: [table], outputs: [lines]}\n",
    )
    wf = workflow_from_spec(spec, pod_templates=True)
    boxed = {n.id: n for n in wf.nodes}["boxed"].flyte_entity
    assert isinstance(boxed, ScanflowContainerTask) and boxed.pod_template is not None

    settings = SerializationSettings(
        image_config=ImageConfig(default_image=Image(name="default", fqn="registry/scanflow", tag="1")),
        project="p",
        domain="d",
        version="v1",
    )
    entities: OrderedDict[Any, Any] = OrderedDict()
    get_serializable(entities, settings, wf)
    [template] = [
        e.template
        for e in entities.values()
        if hasattr(e, "template") and getattr(e.template.id, "name", "") == "small.boxed"
    ]
    [primary] = [c for c in template.k8s_pod.pod_spec["containers"] if c["name"] == "primary"]
    assert primary["image"] == "python:3.11"
    command = [*primary.get("command", []), *primary.get("args", [])]
    assert command[:4] == ["python3", "-m", "scanflow_core", "step"]
    assert command[command.index("--run-id") + 1] == "{{.inputs.run_id}}"


@pytest.mark.slow
@pytest.mark.docker
def test_a_step_with_an_image_runs_through_scanflows_docker_runtime(tmp_path: Path, engine: str) -> None:
    from scanflow_flyte import ScanflowContainerTask, workflow_from_spec

    spec = _write_small(
        tmp_path,
        SMALL
        + f'  - {{name: boxed, stage: logging, image: "{engine}", command: ["sh", "-c", "wc -l < {{inputs.table}} > {{outputs.lines}}"],'
        " inputs: [table], outputs: [lines]}\n",
    )
    home = tmp_path / "home"
    wf = workflow_from_spec(spec, home=home)
    assert isinstance({n.id: n for n in wf.nodes}["boxed"].flyte_entity, ScanflowContainerTask)
    wf(run_id="boxed")

    step = _steps(home, "boxed")["boxed"]
    assert step["status"] == "succeeded" and step["runtime"] == "docker"
    assert (_run_dir(home, "boxed") / "steps" / "boxed" / "outputs" / "lines").read_text().strip() == "5"
    statement = _run_dir(home, "boxed") / "attestations" / "boxed.intoto.jsonl"
    assert statement.is_file()
    assert _manifest(home, "boxed")["status"] == "succeeded"


class TestFlyteConformance(AdapterConformance):
    def execute(self, spec: Path, *, run_id: str, home: Path, params: dict[str, Any]) -> None:
        from scanflow_flyte import workflow_from_spec

        workflow_from_spec(spec, params=params, home=home)(run_id=run_id)
