"""``scanflow serve`` from the command line: a real process on a free port, and its errors in words."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from serving_support import WARNINGS, DigitsStore, Http

from scanflow_core.cli import main
from scanflow_core.serving.logs import parse_line

pytestmark = [pytest.mark.slow, *WARNINGS]

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_scanflow_serve_runs_until_terminated_and_logs_every_request(
    digits_store: DigitsStore, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "access.log"
    reference = tmp_path / "train.npz"
    np.savez(reference, X=digits_store.x_train)
    env = dict(os.environ, PYTHONPATH=str(REPO), SCANFLOW_HOME=str(tmp_path / "home"))
    env.pop("SCANFLOW_TRACKER", None)
    command = [
        sys.executable,
        "-m",
        "scanflow_core",
        "serve",
        "models:/digits@champion",
        "--port",
        str(port),
        "--tracking-uri",
        digits_store.uri,
        "--log-file",
        str(log),
        "--drift-reference",
        str(reference),
        "--drift-window",
        "100",
        "--drift-every",
        "50",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "scanflow serve did not answer /ok"
            try:
                with Http(f"http://127.0.0.1:{port}") as client:
                    if client.get("/ok").status == 200:
                        break
            except OSError:
                time.sleep(0.25)
        with Http(f"http://127.0.0.1:{port}") as client:
            answer = client.post("/predict", {"inputs": digits_store.x_held[:2].tolist()})
            varz = client.get("/varz").json()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err[-3000:]
    assert answer.status == 200 and answer.json()["model_version"] == "1"
    assert varz["config"]["port"] == port and varz["drift"]["window"] == 100
    assert "serving digits v1 (original, attested sha256:" in err
    assert f"live drift on) on http://127.0.0.1:{port}" in err
    assert "Traceback" not in err
    records = [parse_line(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r.path for r in records][-2:] == ["/predict", "/varz"]
    assert out == "", "the log went to --log-file, not stdout"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["models:/nope@champion"], "model models:/nope@champion: not found in the MLflow store"),
        (["models:/digits/9"], "model models:/digits/9: not found in the MLflow store"),
        (["models:/digits/candidate"], "version 'candidate' is not a number"),
        (["runs:/"], "malformed: expected runs:/RUN_ID/PATH"),
        (["/no/such/model"], "model /no/such/model: no MLflow model there (no MLmodel file)"),
        (
            ["models:/digits@champion", "--variant", "onnx"],
            "has no 'onnx' variant; export one with `scanflow variants",
        ),
        (
            ["models:/digits@champion", "--drift-reference", "/no/such.npz"],
            "--drift-reference /no/such.npz: no such file",
        ),
    ],
)
def test_scanflow_serve_says_what_is_wrong_without_a_traceback(
    digits_store: DigitsStore, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    code = main(["serve", *args, "--tracking-uri", digits_store.uri, "--port", "0"])

    err = capsys.readouterr().err
    assert code == 1
    assert says in err and err.startswith("error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "a port lies in 0..65535, not 70000"),
        (["--variant", "fastest"], "invalid choice: 'fastest'"),
        (["--drift-window", "0"], "give 1 or more, not 0"),
        (["--drift-alpha", "1.5"], "give a share in [0, 1), not 1.5"),
    ],
)
def test_scanflow_serve_rejects_bad_arguments(
    capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "models:/digits@champion", *args])

    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_a_port_in_use_is_named(digits_store: DigitsStore, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code = main(
            ["serve", "models:/digits@champion", "--tracking-uri", digits_store.uri, "--port", str(port)]
        )

    assert code == 1
    assert f"cannot serve on 127.0.0.1:{port} (is the port taken?" in capsys.readouterr().err
