"""A real three-step workflow, run with the local runner and attested with a key of its own."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanflow_core.attestation.dsse import PAYLOAD_TYPE, sign_envelope
from scanflow_core.attestation.keys import SigningKey, load_signing_key
from scanflow_core.attestation.statements import serialize
from scanflow_core.plugins import get_plugin_manager, hookimpl
from scanflow_core.records import CheckResult
from scanflow_core.runner import run_workflow
from scanflow_core.runs import WorkflowRun
from scanflow_core.spec import load_workflow

SPEC = """
apiVersion: scanflow/v1
name: attested
params: {n: 5}
steps:
  - {name: make, stage: data_ingestion, call: MOD:make, outputs: [data]}
  - name: fit
    stage: training
    call: MOD:fit
    inputs: [data]
    outputs: {model: {kind: model}}
    checks: [{use: nonempty, on: model, policy: warn}]
  - {name: score, stage: evaluation, call: MOD:score, inputs: [model, data], outputs: [report]}
"""

CODE = """
def make(n, data):
    data.write_text(" ".join(str(i) for i in range(n)))
    return {"rows": n}

def fit(data, model):
    model.write_text(str(sum(int(v) for v in data.read_text().split())))
    return {"loss": 0.5}

def score(model, data, report):
    report.write_text("score " + model.read_text())
    return {"accuracy": 0.9}
"""


class NonEmpty:
    """A checker named ``nonempty``: the artifact is not empty."""

    @hookimpl
    def scanflow_checker_names(self) -> list[str]:
        return ["nonempty"]

    @hookimpl
    def scanflow_check(self, step_run: Any, check: Any, target: str, path: Path) -> CheckResult | None:
        if check.use != "nonempty":
            return None
        size = path.stat().st_size
        return CheckResult("nonempty", target, size > 0, f"{size} bytes", metrics={"bytes": size})


@dataclass
class Attested:
    run: WorkflowRun
    spec: Path
    home: Path

    @property
    def directory(self) -> Path:
        return self.run.directory

    @property
    def key(self) -> SigningKey:
        return load_signing_key(self.home / "keys" / "scanflow.key")

    def envelopes(self, step: str) -> list[dict[str, Any]]:
        path = self.directory / "attestations" / f"{step}.intoto.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def write_envelopes(self, step: str, envelopes: list[dict[str, Any]]) -> None:
        path = self.directory / "attestations" / f"{step}.intoto.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in envelopes))

    def resign(self, step: str, edit: Callable[[dict[str, Any]], None], index: int = 0) -> None:
        """Edit a statement and sign it again with the run's own key (an insider's forgery)."""
        envelopes = self.envelopes(step)
        statement = self.statement(envelopes[index])
        edit(statement)
        envelopes[index] = sign_envelope(serialize(statement), PAYLOAD_TYPE, self.key)
        self.write_envelopes(step, envelopes)

    @staticmethod
    def statement(envelope: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
        return data


RunAttested = Callable[..., Attested]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow tracking here (its own tests cover it), no signing key from the environment."""
    monkeypatch.setenv("SCANFLOW_TRACKER", "off")
    monkeypatch.delenv("SCANFLOW_SIGNING_KEY", raising=False)


@pytest.fixture
def run_attested(write_spec: Any, home: Path) -> RunAttested:
    """``run_attested(spec_text=SPEC, code=CODE)``: run a workflow to the end; its attested run."""

    def run(spec_text: str = SPEC, code: str = CODE, plugins: tuple[Any, ...] = ()) -> Attested:
        spec = write_spec(spec_text, code=code)
        pm = get_plugin_manager([NonEmpty(), *plugins], autoload=False)
        done = run_workflow(load_workflow(spec), pm=pm, home=home)
        assert done.status == "succeeded", done.step_summaries()
        return Attested(done, spec, home)

    return run


@pytest.fixture
def base_spec() -> str:
    """The three-step spec ``run_attested`` runs by default."""
    return SPEC


@pytest.fixture
def base_code() -> str:
    """The step functions of ``base_spec``."""
    return CODE


@pytest.fixture
def attested(run_attested: RunAttested) -> Attested:
    return run_attested()
