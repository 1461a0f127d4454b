"""Layering: the core imports fast and lazily, and never imports an orchestrator or an adapter."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "scanflow_core"

ORCHESTRATORS = ("airflow", "prefect", "flytekit", "scanflow_airflow", "scanflow_prefect", "scanflow_flyte")
#: Heavy libraries the core's plugins may use, loaded only inside the code that needs them.
HEAVY = ("mlflow", "torch", "great_expectations", "docker")
EAGER = ("pydantic", "yaml", "pluggy")


def fresh_python(code: str, cwd: Path, **env: str) -> list[str]:
    """Run ``code`` in a new interpreter; what it prints as JSON on its last line."""
    environ = dict(os.environ, **env)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "statement",
    ["import scanflow_core", "from scanflow_core import __version__", "from scanflow_core import log_metric"],
)
def test_importing_the_core_loads_no_library_eagerly(statement, tmp_path):
    loaded = fresh_python(
        f"""\
        import json, sys
        before = set(sys.modules)
        {statement}
        print(json.dumps(sorted(m for m in {EAGER!r} if m in sys.modules and m not in before)))
        """,
        tmp_path,
    )

    assert loaded == [], f"`{statement}` imported {loaded} eagerly"


def test_loading_and_running_a_workflow_imports_no_orchestrator(tmp_path):
    (tmp_path / "layer_steps.py").write_text(
        textwrap.dedent(
            """\
            from scanflow_core import log_metric


            def make(data):
                data.write_text("1 2 3")
                log_metric("rows", 3)


            def fit(data, model):
                model.write_text(data.read_text())
                return {"loss": 0.1}
            """
        )
    )
    (tmp_path / "scanflow.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: scanflow/v1
            name: layers
            objectives: ["fit.loss < 1"]
            steps:
              - {name: make, stage: data_ingestion, call: layer_steps:make, outputs: [data]}
              - {name: fit, stage: training, call: layer_steps:fit, inputs: [data], outputs: [model]}
              - name: shell
                stage: evaluation
                command: "sh -c 'cat {inputs.model}'"
                inputs: {model: model}
            """
        )
    )

    loaded = fresh_python(
        f"""\
        import json, sys
        from scanflow_core import load_workflow, run_workflow
        from scanflow_core.cli import main

        assert main(["validate", "scanflow.yaml"]) == 0
        run = run_workflow(load_workflow("scanflow.yaml"))
        assert run.status == "succeeded", run.step_summaries()
        assert all(o.passed for o in run.objectives)
        assert main(["plugins", "--json"]) == 0
        print()
        print(json.dumps(sorted(m for m in {ORCHESTRATORS + HEAVY!r} if m in sys.modules)))
        """,
        tmp_path,
        SCANFLOW_HOME=str(tmp_path / ".scanflow"),
    )

    assert loaded == []


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, top-level package, at module level)`` of each import that runs (relative ones skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_only = {  # `if TYPE_CHECKING:` blocks never run: their imports are for the type checker
        id(child)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for child in ast.walk(node)
    }
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level if / try run at import time too
        if isinstance(node, ast.If | ast.Try):
            module_level |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0], id(node) in module_level) for name in names]
    return found


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_the_static_check_sees_the_core():
    assert CORE / "cli.py" in CORE_FILES
    assert (CORE / "runtimes" / "local.py") in CORE_FILES
    assert any(name == "pydantic" for _, name, _ in imports_of(CORE / "spec" / "models.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
def test_no_core_module_imports_an_orchestrator(path):
    bad = [(line, name) for line, name, _ in imports_of(path) if name in ORCHESTRATORS]

    assert bad == [], f"{path.relative_to(REPO)} imports an orchestrator or adapter: {bad}"


#: Modules that wrap a heavy library and load only on demand (the checker dispatcher imports them when a
#: spec uses their checker); the run-time test above shows none of them loads at start-up.
ON_DEMAND = {CORE / "checking" / "drift.py"}


@pytest.mark.parametrize(
    "path", [p for p in CORE_FILES if p not in ON_DEMAND], ids=lambda p: str(p.relative_to(CORE))
)
def test_no_core_module_imports_a_heavy_library_at_module_level(path):
    bad = [(line, name) for line, name, top in imports_of(path) if name in HEAVY and top]

    assert bad == [], f"{path.relative_to(REPO)} imports a heavy library at module level: {bad}"
