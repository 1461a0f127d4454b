"""``scanflow keys generate``, ``scanflow verify`` and ``scanflow bundle`` through the CLI."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.attestation.keys import generate_key_pair
from scanflow_core.cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str | os.PathLike[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    code, out, _ = cli(capsys, "keys", "generate", "--home", home)
    assert code == 0
    private, public = home / "keys" / "scanflow.key", home / "keys" / "scanflow.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "keyid sha256:" in out and "BEGIN" not in out
    code, _, err = cli(capsys, "keys", "generate", "--home", home)
    assert code == 2 and "pass --force" in err
    assert cli(capsys, "keys", "generate", "--home", home, "--force")[0] == 0


def test_verify_prints_a_table_and_exits_0(attested: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "verify", attested.directory)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["step", "statements", "subjects", "inputs", "result"]
    assert [line.split()[0] for line in lines[1:4]] == ["fit", "make", "score"]
    assert all(line.split()[-1] == "ok" for line in lines[1:4])
    assert lines[-1] == f"ok: run {attested.run.run_id}: 4 statements verified"


def test_verify_names_the_step_the_file_and_the_reason(
    attested: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (attested.directory / "steps" / "score" / "outputs" / "report").write_text("forged")
    code, out, _ = cli(capsys, "verify", attested.directory)
    assert code == 1
    assert "FAILED: run" in out
    assert (
        "  score  steps/score/outputs/report: sha256 " in out and "(the file changed after the step)" in out
    )


def test_verify_with_another_key_fails(
    attested: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_key_pair(tmp_path / "other.key")
    code, out, _ = cli(capsys, "verify", attested.directory, "--key", tmp_path / "other.pub")
    assert code == 1 and "signed by another key" in out


def test_verify_without_a_key_or_a_run_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "verify", tmp_path / "nope")
    assert code == 2 and "no such run directory or bundle" in err


def test_bundle_round_trip(
    attested: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (attested.spec.parent / "constraints.txt").write_text("numpy==2.3.0\n")
    out_file = tmp_path / "app.tar.gz"
    code, out, _ = cli(capsys, "bundle", attested.run.run_id, "-o", out_file, "--home", attested.home)
    assert code == 0 and out_file.is_file(), out
    with tarfile.open(out_file) as tar:
        names = set(tar.getnames())
    root = attested.run.run_id
    assert {
        f"{root}/run.json",
        f"{root}/steps/fit/outputs/model",
        f"{root}/attestations/fit.intoto.jsonl",
        f"{root}/bundle/spec/scanflow.yaml",
        f"{root}/bundle/lock/constraints.txt",
        f"{root}/bundle/images.json",
        f"{root}/bundle/scanflow.pub",
        f"{root}/bundle/bundle.json",
    } <= names

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "app.tar.gz"
    out_file.rename(moved)
    shutil.rmtree(attested.home)  # nothing of the original run is left
    attested.spec.unlink()
    monkeypatch.chdir(elsewhere)
    code, out, err = cli(capsys, "verify", "app.tar.gz")
    assert code == 0, out
    assert "public key inside the bundle" in err

    # tamper inside the bundle: a flipped byte in the model
    work = tmp_path / "unpacked"
    with tarfile.open(moved) as tar:
        tar.extractall(work, filter="data")
    model = work / root / "steps" / "fit" / "outputs" / "model"
    model.write_bytes(bytes([model.read_bytes()[0] ^ 1]) + model.read_bytes()[1:])
    with tarfile.open(elsewhere / "tampered.tar.gz", "w:gz") as tar:
        tar.add(work / root, arcname=root)
    code, out, _ = cli(capsys, "verify", "tampered.tar.gz")
    assert code == 1
    assert "  fit  steps/fit/outputs/model: sha256 " in out


def test_bundle_of_an_unknown_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "bundle", "nope", "-o", tmp_path / "x.tar.gz", "--home", tmp_path)
    assert code == 2 and "no run 'nope'" in err


def test_run_then_verify_just_works(
    write_spec: Any, base_spec: str, base_code: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(base_spec.replace("[{use: nonempty, on: model, policy: warn}]", "[]"), code=base_code)
    code, _, err = cli(capsys, "run", spec, "--quiet")
    assert code == 0, err
    assert err.count("generated a signing key") == 1
    [run_dir] = (home / "runs").iterdir()
    code, out, _ = cli(capsys, "verify", run_dir)
    assert code == 0, out
    assert cli(capsys, "run", spec, "--quiet")[2].count("generated a signing key") == 0
