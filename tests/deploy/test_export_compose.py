"""``scanflow export compose``: the file says what each step needs, and the real Compose accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanflow_core.deploy.commands import export
from scanflow_core.deploy.common import memory_bytes
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import SidecarSpec
from scanflow_core.spec import load_workflow

#: One service / Job per step of the digits example, in plan order.
DIGITS_STEPS = list(load_workflow(Path(__file__).parents[2] / "examples/digits/scanflow.yaml").plan.steps)


def _compose_config(directory: Path, require_tool: Any) -> dict[str, Any]:
    """``docker compose config`` (v2 plugin) or ``docker-compose config`` (v1) on the exported file."""
    docker = shutil.which("docker")
    plugin = (
        docker is not None
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    argv = [docker, "compose"] if plugin and docker else [require_tool("docker-compose")]
    done = subprocess.run(
        [*argv, "-f", "docker-compose.yml", "config"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def test_the_digits_example_exports_to_a_file_compose_accepts(
    digits_spec: Path, tmp_path: Path, require_tool: Any
) -> None:
    path, notes = export("compose", digits_spec, tmp_path / "out")
    config = _compose_config(path.parent, require_tool)
    services = config["services"]
    assert list(_load(path)["services"]) == ["tracker", *DIGITS_STEPS]
    assert set(services) == {"tracker", *DIGITS_STEPS}
    evaluate = services["evaluate"]
    assert evaluate["depends_on"] == {
        "tracker": {"condition": "service_healthy"},
        "train": {"condition": "service_completed_successfully"},
        "split": {"condition": "service_completed_successfully"},
    }
    assert evaluate["restart"] == "no"
    assert evaluate["image"] == "scanflow/digits-evaluate:latest"
    assert any("scanflow/digits-evaluate:latest" in note for note in notes)
    env = evaluate["environment"]
    assert env["SCANFLOW_CALL"] == "digits_steps:evaluate"
    assert env["SCANFLOW_INPUT_MODEL"] == "/scanflow/run/steps/train/outputs/model.pt"
    assert env["SCANFLOW_OUTPUT_EVAL_METRICS"] == "/scanflow/run/steps/evaluate/outputs/metrics.json"
    assert env["MLFLOW_TRACKING_URI"] == "http://tracker:5000"
    assert env["PYTHONPATH"] == "/scanflow/lib"
    assert evaluate["command"] == ["python3", "-m", "scanflow_core.exec"]
    targets = {v["target"]: v for v in evaluate["volumes"]}
    assert targets["/scanflow/run"]["source"] == "run"
    assert Path(targets["/scanflow/work"]["source"]) == digits_spec.parent
    assert (Path(targets["/scanflow/lib/scanflow_core"]["source"]) / "exec.py").is_file()
    # The tracker: MLflow with its store on a volume and a health check the steps wait for.
    tracker = services["tracker"]
    assert tracker["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert tracker["healthcheck"]["test"][0] == "CMD-SHELL"
    assert {"source": "tracker", "target": "/mlflow", "type": "volume"}.items() <= tracker["volumes"][
        0
    ].items()
    assert set(config["volumes"]) == {"run", "tracker"}


def test_serving_steps_resources_and_dollars(serving_spec: Path, tmp_path: Path, require_tool: Any) -> None:
    path, _ = export("compose", serving_spec, tmp_path / "out", params=["serve.port=9100"])
    config = _compose_config(path.parent, require_tool)
    services = config["services"]
    prepare, train, serve = services["prepare"], services["train"], services["serve"]
    # A serving step runs on, publishes its port (from params, overridden) and waits for training.
    assert serve["restart"] == "unless-stopped"
    assert serve["ports"][0]["target"] == 9100 and int(serve["ports"][0]["published"]) == 9100
    assert serve["command"] == ["python", "-m", "http.server", "9100"]
    assert serve["depends_on"]["train"] == {"condition": "service_completed_successfully"}
    assert 'exec "$$@"' in _load(path)["services"]["serve"]["entrypoint"][2]
    # Resources: CPU, memory (256Mi = 256 MiB), a GPU reservation.
    assert float(prepare["cpus"]) == 0.5
    assert memory_bytes(str(prepare["mem_limit"])) == 256 * 1024**2  # v1 keeps "256m", v2 gives bytes
    assert memory_bytes(str(train["mem_limit"])) == 10**9
    device = train["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["count"] == 1 and device["capabilities"] == ["gpu"]
    # The wrapper: timeout and retries of the step, the output folder, the marker.
    script = _load(path)["services"]["prepare"]["entrypoint"][2]
    assert 'timeout 90 "$$@"' in script and "-gt 2 ]" in script
    assert "touch /scanflow/run/steps/prepare/.done" in script
    # `$HOME` is the step's own text: escaped for Compose, so the container's shell sees `$HOME`.
    raw = _load(path)["services"]["prepare"]["command"]
    assert raw[2].endswith("echo $$HOME")
    # The workflow input file is bound read-only where the step's environment says it is.
    assert prepare["environment"]["SCANFLOW_INPUT_RAW"] == "/scanflow/inputs/raw"
    bind = next(v for v in prepare["volumes"] if v["target"] == "/scanflow/inputs/raw")
    assert Path(bind["source"]) == serving_spec.parent / "raw.csv" and bind["read_only"] is True
    # A `call` step without an image runs in the image Scanflow builds for it; the prefix goes before it.
    assert train["image"] == "scanflow/small-serve-train:latest"
    assert services["prepare"]["image"] == "python:3.11-slim"


def test_image_options(serving_spec: Path, tmp_path: Path) -> None:
    path, notes = export("compose", serving_spec, tmp_path / "a", image_prefix="registry.example.com/ml/")
    assert (
        _load(path)["services"]["train"]["image"]
        == "registry.example.com/ml/scanflow/small-serve-train:latest"
    )
    assert notes
    path, notes = export("compose", serving_spec, tmp_path / "b", image="team/python-ml:1")
    assert _load(path)["services"]["train"]["image"] == "team/python-ml:1"
    assert notes == []


class _Checker:
    @hookimpl
    def scanflow_sidecars(self, run: Any) -> list[SidecarSpec]:
        return [
            SidecarSpec(
                name="checker",
                image="example/checker:1",
                command=["serve", "--port", "7000"],
                env={"LEVEL": "$debug"},
                ports={7000: None},
                inject_env={"CHECKER_URL": "http://checker:7000"},
            )
        ]


def test_plugin_sidecars_and_the_tracker_switches(write_spec: Any, tmp_path: Path, require_tool: Any) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: tiny
        tracker: {enabled: false}
        steps:
          - {name: only, stage: data_ingestion, image: "busybox:1", command: "true"}
        """
    )
    pm = get_plugin_manager([_Checker()], autoload=False)
    path, _ = export("compose", spec, tmp_path / "out", pm=pm)
    services = _compose_config(path.parent, require_tool)["services"]
    assert set(services) == {"checker", "only"}  # no tracker: the spec turned it off
    assert services["only"]["environment"]["CHECKER_URL"] == "http://checker:7000"
    assert "MLFLOW_TRACKING_URI" not in services["only"]["environment"]
    assert services["only"]["depends_on"] == {"checker": {"condition": "service_started"}}
    assert services["checker"]["command"] == ["serve", "--port", "7000"]

    spec.write_text(spec.read_text().replace("{enabled: false}", "{uri: 'http://mlflow.example:5000'}"))
    path, _ = export("compose", spec, tmp_path / "uri")
    services = _load(path)["services"]
    assert set(services) == {"only"}  # a server of the spec's own: no sidecar, its address for the steps
    assert services["only"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"


def test_the_tracker_image_is_configurable(
    digits_spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCANFLOW_TRACKER_IMAGE", "registry.example.com/mlflow:3")
    path, _ = export("compose", digits_spec, tmp_path)
    assert _load(path)["services"]["tracker"]["image"] == "registry.example.com/mlflow:3"
