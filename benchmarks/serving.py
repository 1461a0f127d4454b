"""Serving speed: ``scanflow serve`` against ``mlflow models serve --env-manager local``, same model and load.

    python benchmarks/serving.py [--duration 10] [--rounds 2] [--concurrency 1,16] [--rows 1,32] [--variants]

The model is the digits example's one-hidden-layer torch MLP (64 → 64 → 10), trained for a few
epochs on scikit-learn's bundled digits, logged with ``mlflow.pytorch`` to an embedded store in a
temporary folder and registered as ``digits@champion``. Both servers load ``models:/digits@champion``
from that store, each in its own process with one worker and one torch thread (``scanflow serve``'s
default ``--threads 1``; ``OMP_NUM_THREADS=1`` for MLflow), and each writes one access line per
request (Scanflow's extended NCSA line to a file; uvicorn's access log for MLflow).

The load comes from a second process on loopback: an asyncio HTTP/1.1 client (keep-alive, one
request in flight per connection) that keeps ``--concurrency`` connections busy for ``--duration``
seconds after a warm-up, sending ``{"inputs": [[64 numbers] x rows]}`` to ``/predict`` (Scanflow) or
``/invocations`` (MLflow). Each load runs ``--rounds`` times, the servers taking turns, and the round
with the highest throughput of each server is kept. The client counts answers by status and times
each request; the table gives
throughput (requests/s), p50 and p99 latency (ms) and the ratios Scanflow / MLflow. Both servers
must answer 200 to every request and give the same predictions. Target: Scanflow at least as fast
(throughput ratio >= 1, p99 ratio <= 1) at every load; exit status 1 otherwise.

``--variants`` also exports the ONNX and int8 variants (``scanflow variants``) and measures
``scanflow serve --variant onnx`` and ``--variant int8`` under the same loads, after printing each
variant's accuracy on the held-out digits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------------------ client


async def _worker(
    host: str, port: int, request: bytes, stop_at: float, warm_until: float, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            status_line = await reader.readline()
            length = -1
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length < 0:
                raise RuntimeError("the server answered without a Content-Length")
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if started < warm_until:
                continue
            status = int(status_line.split()[1])
            out["latencies"].append(done - started)
            out["status"][status] = out["status"].get(status, 0) + 1
            if out.get("first") is None:
                out["first"] = body.decode()
    finally:
        writer.close()


async def _load(url: str, body: bytes, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    request = (
        f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-User-Id: bench\r\n\r\n"
    ).encode() + body
    out: dict[str, Any] = {"latencies": [], "status": {}, "first": None}
    now = time.perf_counter()
    warm_until, stop_at = now + warmup, now + warmup + duration
    await asyncio.gather(
        *[_worker(host, int(port), request, stop_at, warm_until, out) for _ in range(concurrency)]
    )
    latencies = np.array(out["latencies"])
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / duration,
        "p50_ms": float(np.percentile(latencies, 50) * 1000) if len(latencies) else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99) * 1000) if len(latencies) else float("nan"),
        "status": {str(k): v for k, v in out["status"].items()},
        "first": out["first"],
    }


def client_main(args: list[str]) -> None:
    """``--client URL BODY_FILE CONCURRENCY DURATION WARMUP``: print the load's result as JSON."""
    url, body_file, concurrency, duration, warmup = args
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(
        _load(url, Path(body_file).read_bytes(), int(concurrency), float(duration), float(warmup))
    )
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_model(folder: Path, uri: str) -> tuple[np.ndarray, np.ndarray]:
    """Train the digits MLP, log and register it as digits@champion; return the held-out digits."""
    import mlflow
    import torch
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from torch import nn

    bunch = load_digits()
    x, y = (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, held = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(30):
        for batch in torch.randperm(len(xt)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(xt[batch]), yt[batch]).backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        signature = infer_signature(x[:5], net(torch.from_numpy(x[:5])).numpy())
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            signature=signature,
            serialization_format="pickle",
            pip_requirements=["torch==2.13.0"],
            registered_model_name="digits",
        )
    mlflow.MlflowClient().set_registered_model_alias("digits", "champion", info.registered_model_version)
    np.savez(folder / "held.npz", X=x[held], y=y[held])
    return x[held], y[held]


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the server at {url} did not answer in {timeout}s: {log.read_text()[-3000:]}")


def start(command: list[str], env: dict[str, str], log: Path, health: str) -> subprocess.Popen[bytes]:
    """Start a server and wait until it answers its health endpoint."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for(health, process, log)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(url: str, body: Path, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--client", url, str(body), str(concurrency), str(duration), str(warmup)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the load client failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def predictions(first: str | None) -> Any:
    answer = json.loads(first or "{}")
    return np.asarray(answer.get("predictions"), dtype=np.float64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before timing (2)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and load, alternating (2)")
    parser.add_argument("--concurrency", default="1,16", help="connections, comma-separated (1,16)")
    parser.add_argument("--rows", default="1,32", help="rows per request, comma-separated (1,32)")
    parser.add_argument("--variants", action="store_true", help="also serve the ONNX and int8 variants")
    args = parser.parse_args()
    loads_ = [(int(c), int(r)) for r in args.rows.split(",") for c in args.concurrency.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="scanflow-bench-serving-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, SCANFLOW_HOME=str(folder / "home"))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])  # mlflow runs `uvicorn` from PATH
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    # One torch thread in both servers (scanflow serve's default --threads 1): the comparison is of the
    # servers, not of thread pools fighting over two cores.
    mlflow_env = dict(env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = time.perf_counter()
        x_held, _ = make_model(folder, uri)
        print(f"model digits@champion logged in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        model = "models:/digits@champion"
        port = free_port()
        mlflow = [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local"]
        servers = {
            "mlflow": (
                [*mlflow, "-h", "127.0.0.1", "-p", str(port)],
                mlflow_env,
                f"http://127.0.0.1:{port}/invocations",
                f"http://127.0.0.1:{port}/ping",
            )
        }
        variants = ["original"]
        if args.variants:
            command = [str(BIN / "scanflow"), "variants", model, "--data", str(folder / "held.npz")]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            print(done.stdout + (done.stderr if done.returncode else ""), file=sys.stderr)
            if done.returncode != 0:
                return 1
            variants += ["onnx", "int8"]
        for variant in variants:
            port = free_port()
            name = "scanflow" if variant == "original" else f"scanflow-{variant}"
            log = str(folder / f"{name}.access.log")
            command = [str(BIN / "scanflow"), "serve", model, "--port", str(port), "--variant", variant]
            servers[name] = (
                [*command, "--threads", "1", "--log-file", log],
                env,
                f"http://127.0.0.1:{port}/predict",
                f"http://127.0.0.1:{port}/ok",
            )
        for name, (command, server_env, _, health) in servers.items():
            processes.append(start(command, server_env, folder / f"{name}.log", health))

        rng = np.random.default_rng(0)
        results: dict[tuple[str, int, int], dict[str, Any]] = {}
        for concurrency, rows in loads_:
            body = folder / f"body-{rows}.json"
            if not body.exists():
                body.write_text(
                    json.dumps({"inputs": x_held[rng.choice(len(x_held), rows, replace=False)].tolist()})
                )
            for _ in range(args.rounds):
                for name, (_, _, url, _) in servers.items():
                    result = load(url, body, concurrency, args.duration, args.warmup)
                    best = results.get((name, concurrency, rows))
                    if best is None or result["throughput"] > best["throughput"]:
                        results[(name, concurrency, rows)] = result
        return report(results, loads_, list(servers))
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def report(
    results: dict[tuple[str, int, int], dict[str, Any]], loads_: list[tuple[int, int]], names: list[str]
) -> int:
    print(f"{'server':<16} {'conns':>5} {'rows':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  status")
    ok = True
    for concurrency, rows in loads_:
        for name in names:
            r = results[(name, concurrency, rows)]
            print(
                f"{name:<16} {concurrency:>5} {rows:>4} {r['throughput']:>9.1f} {r['p50_ms']:>8.2f} "
                f"{r['p99_ms']:>8.2f}  {r['status']}"
            )
            if set(r["status"]) != {"200"}:
                ok = False
        base, ours = results[("mlflow", concurrency, rows)], results[("scanflow", concurrency, rows)]
        same = np.allclose(predictions(base["first"]), predictions(ours["first"]), atol=1e-4)
        speed = ours["throughput"] / base["throughput"]
        p50, p99 = ours["p50_ms"] / base["p50_ms"], ours["p99_ms"] / base["p99_ms"]
        print(
            f"  scanflow / mlflow at {concurrency} conns x {rows} rows: throughput x{speed:.2f}, "
            f"p50 x{p50:.2f}, p99 x{p99:.2f}; same predictions: {same}"
        )
        ok = ok and same and speed >= 1.0 and p99 <= 1.0
    print("target met: Scanflow at least as fast at every load" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        sys.exit(main())
