"""The Prefect examples (examples/prefect): the digits workflow as a flow from its spec, and written
as Scanflow tasks, run for real; and their deployments build as the README says."""

from __future__ import annotations

import logging.config
from pathlib import Path
from typing import Any

import pytest
from prefect_helpers import artifacts, flow_run, manifest, steps

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_server"),
    # A digits step that uses MLflow's SQL store configures every SQLAlchemy mapper in the process, the
    # Prefect server's too (the harness loaded them); SQLAlchemy 2.1 warns about Prefect's UUID type.
    pytest.mark.filterwarnings(
        "ignore:Type object <class 'prefect.server.utilities.database.UUID'> does not refer to an OperatorClass"
        ":DeprecationWarning"
    ),
]

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "prefect"
DIGITS_STEPS = ["ingest", "validate", "split", "train", "evaluate", "test"]


def _no_logging_reconfiguration(config: Any) -> None:
    """A step must leave the host's logging alone: ``logging.config.dictConfig`` in a task run's thread
    shuts every handler down under the logging lock, Prefect's API log handler among them, whose flush
    waits for a lock another task run's thread holds while it waits for the logging lock: the flow
    run hangs for good. Here such a step fails, naming the cause."""
    raise AssertionError(
        "a step called logging.config.dictConfig in the flow run's process, which deadlocks Prefect "
        "(uvicorn.Config does so unless given log_config=None)"
    )


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """``example("digits_flow")`` → the example module, imported as a user would; runs go to tmp_path."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("SCANFLOW_HOME", str(tmp_path / "home"))
    import prefect.main  # noqa: F401  (Prefect configures its logging on import, before any step runs)

    monkeypatch.setattr(logging.config, "dictConfig", _no_logging_reconfiguration)
    loaded: list[str] = []

    def load(name: str) -> Any:
        loaded.append(name)
        sys.modules.pop(name, None)  # examples/flyte has a module of the same name
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.mark.timeout(900, method="thread")  # a hung flow run (a lock held in a step) ends the session
def test_the_digits_flow_runs_the_spec_for_real(example: Any, tmp_path: Path) -> None:
    digits_flow = example("digits_flow")

    state = digits_flow.digits(run_id="digits-prefect", return_state=True)

    home = tmp_path / "home"
    recorded = steps(home, "digits-prefect")
    failed = {n: s["reason"] for n, s in recorded.items() if s["status"] not in ("succeeded", "skipped")}
    assert state.is_completed() and not failed, failed or state.message
    result = state.result()
    assert result["status"] == "succeeded"
    assert result["objectives"] and all(o["passed"] for o in result["objectives"])
    run = manifest(home, "digits-prefect")
    assert run["orchestrator"] == "prefect" and set(recorded) == set(run["steps"])
    assert {n: s["status"] for n, s in recorded.items() if n in DIGITS_STEPS} == dict.fromkeys(
        DIGITS_STEPS, "succeeded"
    )
    assert all(s["status"] in ("succeeded", "skipped") for s in recorded.values())
    assert recorded["evaluate"]["metrics"]["accuracy"] >= 0.9
    published = {a.key: a.data for a in artifacts(flow_run(state).id)}
    assert {"scanflow-checks-digits-split", "scanflow-checks-digits-evaluate"} <= set(published)
    assert "| leakage | eval | outputs | fail | error | passed |" in published["scanflow-checks-digits-split"]


@pytest.mark.timeout(900, method="thread")  # a hung flow run (a lock held in a step) ends the session
def test_the_digits_flow_of_scanflow_tasks_runs_for_real(example: Any, tmp_path: Path) -> None:
    from scanflow_core.attestation.verify import verify_attestation

    digits_tasks = example("digits_tasks")

    accuracies = digits_tasks.digits_tasks(epochs=5, scanflow_run_id="digits-tasks")

    assert accuracies["eval_accuracy"] >= 0.8 and accuracies["test_accuracy"] >= 0.8
    home = tmp_path / "home"
    run = manifest(home, "digits-tasks")
    assert run["status"] == "succeeded" and run["workflow"] == "digits_tasks"
    assert list(run["steps"])[:4] == DIGITS_STEPS[:4] and set(run["steps"]) == set(DIGITS_STEPS)
    assert run["steps"]["train"]["params"]["epochs"] == 5
    assert run["steps"]["split"]["checks"] == {"passed": 2, "failed": 0, "warned": 0}
    assert verify_attestation(home / "runs" / "digits-tasks").ok


def test_the_examples_build_deployments(example: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(ROOT)
    digits = example("digits_flow").digits
    deployment = digits.to_deployment(
        name="digits-nightly", cron="0 3 * * *", parameters={"params": {"seed": 1}}
    )
    assert deployment.entrypoint == "examples/prefect/digits_flow.py:digits"
    assert deployment.flow_name == "digits" and deployment.parameters == {"params": {"seed": 1}}
    assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 3 * * *"
    loaded = load_flow_from_entrypoint(deployment.entrypoint)  # what a worker does with it
    assert loaded.name == "digits" and set(loaded.parameters.properties) == {"run_id", "params"}

    tasks_flow = example("digits_tasks").digits_tasks
    assert (
        tasks_flow.to_deployment(name="tasks").entrypoint == "examples/prefect/digits_tasks.py:digits_tasks"
    )

    sourced = flow.from_source(source=str(ROOT), entrypoint="examples/prefect/digits_flow.py:digits")
    assert sourced.to_deployment(name="from-source").entrypoint == "examples/prefect/digits_flow.py:digits"


def test_a_flow_not_bound_to_a_module_variable_says_how_to_deploy_it() -> None:
    from scanflow_prefect import flow_from_spec

    unbound = flow_from_spec(ROOT / "examples" / "digits" / "scanflow.yaml")
    with pytest.raises(ValueError, match=r"assign flow_from_spec\(\.\.\.\) to a module-level variable"):
        unbound.to_deployment(name="nowhere")
