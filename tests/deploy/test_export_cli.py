"""``scanflow export``: the command writes the files, and says clearly what is wrong with a bad spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scanflow_core.cli import main
from scanflow_core.deploy.common import dns_name, docker_memory, k8s_quantity, memory_bytes


@pytest.mark.parametrize(
    ("target", "name"), [("compose", "docker-compose.yml"), ("swarm", "stack.yml"), ("k8s", "manifests.yaml")]
)
def test_export_writes_the_target_file(
    target: str, name: str, digits_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deploy" / target
    code = main(["export", target, str(digits_spec), "-o", str(out), "--param", "train.epochs=3"])
    assert code == 0
    written = out / name
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    text = written.read_text(encoding="utf-8")
    assert text.startswith(f"# scanflow export {target}: workflow 'digits' (sha256:")
    assert list(yaml.safe_load_all(text))
    assert '\\"epochs\\": 3' in text or '"epochs": 3' in text  # the override reached the step's params


def test_notes_go_to_stderr(digits_spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["export", "k8s", str(digits_spec), "-o", str(tmp_path), "--image-prefix", "reg.example/"]) == 0
    )
    err = capsys.readouterr().err
    assert err.startswith("note: build (and push) the images")
    assert "reg.example/scanflow/digits-train:latest" in err
    docs = list(yaml.safe_load_all((tmp_path / "manifests.yaml").read_text()))
    assert {d["kind"] for d in docs} >= {"Job", "ConfigMap"}


def test_a_bad_spec_is_an_error_with_its_place(
    write_spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: broken
        steps:
          - {name: a, stage: training, command: "true", needs: [nope]}
        """
    )
    out = tmp_path / "out"
    assert main(["export", "compose", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "steps[0].needs[0]" in err and "nope" in err
    assert "Traceback" not in err
    assert not (out / "docker-compose.yml").exists()


def test_a_missing_spec_and_a_bad_parameter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "k8s", str(tmp_path / "none.yaml"), "-o", str(tmp_path)]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_steps_that_deploy_under_one_name_are_refused(
    write_spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: clash
        tracker: {enabled: false}
        steps:
          - {name: load_data, stage: data_ingestion, image: "busybox:1", command: "true"}
          - {name: load__Data, stage: data_ingestion, image: "busybox:1", command: "true"}
        """
    )
    assert main(["export", "swarm", str(spec), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'load_data' and 'load__Data' both deploy as 'load-data'" in err


def test_a_serving_step_needs_a_real_port(
    write_spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        """
        apiVersion: scanflow/v1
        name: srv
        steps:
          - {name: serve, stage: serving, image: "busybox:1", command: "true", params: {port: web}}
        """
    )
    assert main(["export", "compose", str(spec), "-o", str(tmp_path)]) == 2
    assert "not a port: 'web'" in capsys.readouterr().err


def test_bad_arguments_are_refused_by_the_parser(digits_spec: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "nomad", str(digits_spec), "-o", str(tmp_path)])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["export", "k8s", str(digits_spec)])  # -o is required
    with pytest.raises(SystemExit):
        main(["export", "k8s", str(digits_spec), "-o", str(tmp_path), "--replicas", "0"])


def test_names_and_sizes() -> None:
    assert dns_name("prep.Load_Data") == "prep-load-data"
    assert dns_name("9lives") == "s9lives"
    long = dns_name("x" * 100)
    assert len(long) == 63 and long != dns_name("x" * 101)
    assert memory_bytes("512Mi") == memory_bytes("512m") == 512 * 1024**2
    assert memory_bytes("1G") == 10**9 and memory_bytes("1GB") == 10**9 and memory_bytes("2k") == 2048
    assert k8s_quantity("512m") == "512Mi" and k8s_quantity("1.5Gi") == "1.5Gi" and k8s_quantity("1G") == "1G"
    assert docker_memory("1G") == "1000000000" and docker_memory("2Gi") == "2g"


def test_sizes_agree_with_the_docker_runtime() -> None:
    from scanflow_core.runtimes.docker import memory_bytes as runtime_bytes

    for size in ("512Mi", "512m", "1G", "1g", "1.5Gi", "100", "256MB", "2k", "3T"):
        assert memory_bytes(size) == runtime_bytes(size), size
