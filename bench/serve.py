"""`dltrain serve` against a minimal FastAPI + uvicorn + onnxruntime app on the same run's ONNX export.

Loopback only, bounded in requests and time. Side by side in one run:

1. latency and throughput: CLIENTS concurrent keep-alive clients, each sending one-row JSON
   requests for SECONDS, against each server in turn (the same client code for all, checking
   every answer's label); 0 errors expected; p50, p99 and requests per second;
   and the CPU time each request costs the server process and the client (microseconds, from
   /proc/PID/stat and the bench's own process time), which is what stays meaningful on a
   machine other work keeps busy: the clock figures move with the load, CPU per request
   barely. A third server gives the floor: a raw ASGI app on the same uvicorn settings that
   answers a constant JSON body (uvicorn and httptools alone, no routing, no model);
2. one 10,000-row request (JSON columns, and CSV) against the same prediction in process
   (``predict_cells`` on the same columns, ``predict_rows`` on the same file), medians of 5;
3. answers equal ``dltrain predict`` (labels identical, probabilities within 1e-6, CSV bytes
   equal) on every shipped dataset (configs/*.yaml whose data is in data/).

    python bench/serve.py [--seconds 10] [--clients 32] [--config configs/iris.yaml] [--only latency]
                          [--against OTHER_CHECKOUT/src]

Needs the serve, onnx and bench extras (FastAPI for the reference app)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_SECONDS = 120  # no single step of the bench runs longer than this


# ---------------------------------------------------------------- the reference app


def reference_app(model_path: str):
    """The peers' usual serving path: FastAPI, a sync endpoint, onnxruntime on the exported graph."""
    import numpy as np
    import onnxruntime
    from fastapi import Body, FastAPI

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inputs = [(item.name, item.type) for item in session.get_inputs()]
    outputs = [item.name for item in session.get_outputs()]
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict = Body(...)):  # noqa: B008 (FastAPI's way of taking the JSON body)
        rows = body["rows"]
        feed = {
            name: np.array(
                [[row[name]] for row in rows], dtype=object if kind == "tensor(string)" else np.float32
            ).reshape(-1, 1)
            for name, kind in inputs
        }
        results = dict(zip(outputs, session.run(None, feed)))
        if "label" in results:
            return {
                "predictions": [
                    {"label": str(label), "probabilities": probabilities.tolist()}
                    for label, probabilities in zip(results["label"].reshape(-1), results["probabilities"])
                ]
            }
        return {"predictions": [{"values": values.tolist()} for values in results["prediction"]]}

    return app


def run_reference(model_path: str) -> None:
    import socket

    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    print(f"serving at http://127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(reference_app(model_path), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


FLOOR_ANSWER = b'{"predictions":[{"species":"setosa","prob_setosa":0.99944836}]}'


async def floor_app(scope, receive, send):
    """What uvicorn and httptools cost alone: any request answered with a constant JSON body."""
    if scope["type"] != "http":
        return
    more = True
    while more:  # the body read, as any server must
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(FLOOR_ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": FLOOR_ANSWER})


def run_floor() -> None:
    """The floor app on dltrain serve's uvicorn settings (but the lifespan, which it has none of)."""
    import socket

    import uvicorn

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    print(f"serving at http://127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        floor_app, log_config=None, log_level="warning", access_log=False, lifespan="off", server_header=False
    )
    uvicorn.Server(config).run(sockets=[listener])


# ---------------------------------------------------------------- servers as processes


class ServerProcess:
    def __init__(self, command: list[str], log: Path, cwd: Path, env: dict | None = None):
        self.log = log
        self.handle = open(log, "w")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.handle, cwd=cwd, env=env)
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"at http://127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                self.port = int(found.group(1))
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[:4]} did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def wait_ready(self) -> "ServerProcess":
        """Until GET /health answers but 503 (dltrain serve warms its models up after it listens;
        the reference app has no /health and answers 404 once it listens)."""
        deadline = time.monotonic() + 60
        while True:
            request = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
            try:
                if one_request(self.port, request)[0] != 503:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server never became ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float | None:
        """User and system CPU time of the server process so far (Linux: /proc; else None)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.handle.close()


# ---------------------------------------------------------------- an HTTP/1.1 client as light as can be


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
    return status, await reader.readexactly(length)


def _request(path: str, body: bytes, kind: str = "application/json") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _client(port, requests, labels_of, stop_at, latencies, errors):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = 0
    while time.perf_counter() < stop_at:
        request, expected = requests[index % len(requests)]
        index += 1
        started = time.perf_counter()
        try:
            status, body = await _exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError) as error:
            errors.append(repr(error))
            return
        latencies.append(time.perf_counter() - started)
        if status != 200 or labels_of(json.loads(body)) != expected:
            errors.append(f"{status} {body[:200]!r}")
    writer.close()


def load_test(server: ServerProcess, requests, labels_of, clients: int, seconds: float) -> dict:
    """The load, and its cost: the server's and this client's CPU microseconds per request."""
    latencies: list[float] = []
    errors: list[str] = []

    async def run():
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(
            *(
                _client(server.port, requests[i::clients] or requests, labels_of, stop_at, latencies, errors)
                for i in range(clients)
            )
        )

    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    asyncio.run(asyncio.wait_for(run(), seconds + 30))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_cpu = None if server_cpu is None else server.cpu_seconds() - server_cpu  # type: ignore[operator]
    latencies.sort()
    count = max(len(latencies), 1)
    return {
        "server_cpu_us": None if server_cpu is None else 1e6 * server_cpu / count,
        "client_cpu_us": 1e6 * client_cpu / count,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "p99_ms": 1e3 * latencies[int(len(latencies) * 0.99)],
        "per_second": len(latencies) / elapsed,
    }


def one_request(port: int, request: bytes) -> tuple[int, bytes]:
    async def run():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await _exchange(reader, writer, request)
        finally:
            writer.close()

    return asyncio.run(asyncio.wait_for(run(), LIMIT_SECONDS))


def _median_seconds(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ---------------------------------------------------------------- the bench


def _dltrain(*arguments: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dltrain", *arguments],
        cwd=cwd,
        check=True,
        timeout=LIMIT_SECONDS,
        stdout=subprocess.DEVNULL,
    )


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def latency_section(folder: Path, config: Path, clients: int, seconds: float, against: Path | None = None) -> dict:
    """Each server loaded in turn; ``against``: another checkout's src/, served too (before and after)."""
    from dltrain.api import load
    from dltrain.commands.predict import predict_rows

    name = config.stem
    run = folder / "runs" / name
    _dltrain("export", str(run), cwd=folder)
    schema = load(run).schema
    data = folder / "data" / f"{name}.csv"
    header, expected = predict_rows(run, data)
    rows = _rows(data)
    numeric = {column.name for column in schema.columns if column.type == "numeric"}

    def cell(column, text):
        return float(text) if column in numeric else text

    one_rows = [{column: cell(column, row[column]) for column in schema.feature_names} for row in rows]
    ours = [
        (_request("/predict", json.dumps({"rows": [row]}).encode()), [line[0]]) for row, line in zip(one_rows, expected)
    ]
    servers = {  # name: (command, the labels of an answer)
        "dltrain serve": (
            ["-m", "dltrain", "serve", str(run), "--port", "0", "--quiet"],
            lambda answer: [item[header[0]] for item in answer["predictions"]],
        ),
        "FastAPI + onnxruntime": (
            [__file__, "--reference", str(run / "model.onnx")],
            lambda answer: [item["label"] for item in answer["predictions"]],
        ),
        "floor (raw ASGI)": ([__file__, "--floor"], None),
    }
    environments = {name: None for name in servers}
    if against is not None:
        servers = {"dltrain serve --against": servers["dltrain serve"], **servers}
        environments["dltrain serve --against"] = {**os.environ, "PYTHONPATH": str(against.resolve())}
    results: dict = {}
    for _ in (1, 2):  # each server twice, in turns, so a neighbour's load hits all alike
        for server_name, (command, labels_of) in servers.items():
            server = ServerProcess(
                [sys.executable, *command], folder / "server.log", folder, environments[server_name]
            ).wait_ready()
            requests = ours if labels_of else [(request, None) for request, _ in ours]
            try:
                results.setdefault(server_name, []).append(
                    load_test(server, requests, labels_of or (lambda answer: None), clients, seconds)
                )
            finally:
                server.stop()
    return results


def big_request_section(folder: Path, config: Path, against: Path | None = None, n_rows: int = 10_000) -> dict:
    """One ``n_rows`` request as JSON columns, JSON rows and CSV to each server (and ``against``'s),
    the servers in turns so that a neighbour's load hits all alike, against the same prediction
    in process: ``predict_cells`` on the same columns (the JSON forms' cells, already Python
    lists), the whole JSON round in process (the body parsed, predicted, the answer written, as
    the server does it; this checkout's code), and ``predict_rows`` on the same file."""
    from dltrain.api import load
    from dltrain.commands.predict import predict_rows, predictions_csv
    from dltrain.commands.serve.wire import json_cells, predictions_json
    from dltrain.predictions import predict_cells

    name = config.stem
    run_dir = folder / "runs" / name
    run = load(run_dir)
    lines = (folder / "data" / f"{name}.csv").read_text().splitlines(keepends=True)
    body_lines = lines[1:] * (n_rows // (len(lines) - 1) + 1)
    big_csv = folder / "big.csv"
    big_csv.write_text(lines[0] + "".join(body_lines[:n_rows]))
    numeric = {column.name for column in run.schema.columns if column.type == "numeric"}
    rows = [
        {column: float(row[column]) if column in numeric else row[column] for column in run.schema.feature_names}
        for row in _rows(big_csv)
    ]
    columns = {column: [row[column] for row in rows] for column in run.schema.feature_names}
    json_bodies = {
        "json_columns": json.dumps({"columns": columns}).encode(),
        "json_rows": json.dumps({"rows": rows}).encode(),
    }
    bodies = {form: _request("/predict", body) for form, body in json_bodies.items()}
    bodies["csv"] = _request("/predict", big_csv.read_bytes(), "text/csv")

    def json_in_process(body: bytes) -> bytes:
        cells, n, by_columns = json_cells(body, run.schema, n_rows)
        return predictions_json(predict_cells(run, cells), by_columns)

    expected = predictions_csv(*predict_rows(run_dir, big_csv)).encode()
    results: dict = {
        "rows": n_rows,
        "in_process_s": {
            "predict_cells": _median_seconds(lambda: predict_cells(run, columns), 9),
            "predict_rows": _median_seconds(lambda: predict_rows(run_dir, big_csv), 9),
            **{form: _median_seconds(lambda body=body: json_in_process(body), 9) for form, body in json_bodies.items()},
        },
    }
    environments: dict = {"dltrain serve": None}
    if against is not None:
        environments = {"dltrain serve --against": {**os.environ, "PYTHONPATH": str(against.resolve())}, **environments}
    command = [sys.executable, "-m", "dltrain", "serve", str(run_dir), "--port", "0"]  # with access lines
    servers = {
        server_name: ServerProcess(command, folder / f"big-{index}.log", folder, environment)
        for index, (server_name, environment) in enumerate(environments.items())
    }
    try:
        times: dict = {server_name: {form: [] for form in bodies} for server_name in servers}
        for server in servers.values():
            server.wait_ready()
            assert one_request(server.port, bodies["csv"]) == (200, expected), "the CSV answer differs from predict"
        for _ in range(9):
            for form, body in bodies.items():
                for server_name, server in servers.items():
                    started = time.perf_counter()
                    one_request(server.port, body)
                    times[server_name][form].append(time.perf_counter() - started)
    finally:
        for server in servers.values():
            server.stop()
    for server_name, forms in times.items():
        results[server_name] = {form: statistics.median(values) for form, values in forms.items()}
        # The server's own time: its access lines' milliseconds (the body read to the answer sent),
        # in the order sent (the check first); what the client sees beyond it is the client and the sockets.
        own = [
            float(ms) / 1e3
            for ms in re.findall(r"POST /predict 200 \d+ ([\d.]+)ms", servers[server_name].log.read_text())
        ]
        results[server_name].update(
            (f"{form}_server", statistics.median(own[1 + index :: len(bodies)])) for index, form in enumerate(bodies)
        )
    return results


def _print_big(big: dict) -> None:
    in_process = big["in_process_s"]
    cells, rows = in_process["predict_cells"], in_process["predict_rows"]
    print(
        f"{big['rows']:,}-row request (medians of 9, the servers in turns): in process predict_cells "
        f"{cells * 1e3:.1f} ms, the JSON columns body parsed + predicted + answer written "
        f"{in_process['json_columns'] * 1e3:.1f} ms, the JSON rows one {in_process['json_rows'] * 1e3:.1f} ms, "
        f"predict_rows {rows * 1e3:.1f} ms"
    )
    for server, figures in big.items():
        if server in ("rows", "in_process_s"):
            continue
        print(
            f"  {server}: JSON columns {figures['json_columns'] * 1e3:.1f} ms ({figures['json_columns'] / cells:.2f}x "
            f"predict_cells, {figures['json_columns'] / in_process['json_columns']:.2f}x in process), JSON rows "
            f"{figures['json_rows'] * 1e3:.1f} ms ({figures['json_rows'] / cells:.2f}x, "
            f"{figures['json_rows'] / in_process['json_rows']:.2f}x), "
            f"CSV {figures['csv'] * 1e3:.1f} ms ({figures['csv'] / rows:.2f}x predict_rows)"
        )
        print(
            f"    of which in the server (its access lines): JSON columns "
            f"{figures['json_columns_server'] * 1e3:.1f} ms, "
            f"JSON rows {figures['json_rows_server'] * 1e3:.1f} ms, CSV {figures['csv_server'] * 1e3:.1f} ms"
        )


def equality_section(folder: Path) -> dict:
    """Every shipped dataset served at once; JSON and CSV answers against predict."""
    from dltrain.commands.predict import predict_rows, predictions_csv

    configs = [
        path for path in sorted((folder / "configs").glob("*.yaml")) if (folder / "data" / f"{path.stem}.csv").exists()
    ]
    for config in configs:
        if not (folder / "runs" / config.stem).exists():
            _dltrain(
                "fit",
                str(config.relative_to(folder)),
                "--quiet",
                "--set",
                "train.epochs=5",
                "--out",
                f"runs/{config.stem}",
                cwd=folder,
            )
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "dltrain",
            "serve",
            *(f"runs/{config.stem}" for config in configs),
            "--port",
            "0",
            "--quiet",
        ],
        folder / "equality.log",
        folder,
    ).wait_ready()
    results = {}
    try:
        for config in configs:
            name, data = config.stem, folder / "data" / f"{config.stem}.csv"
            header, expected = predict_rows(folder / "runs" / name, data)
            status, answer = one_request(
                server.port, _request(f"/models/{name}/predict", json.dumps({"rows": _rows(data)}).encode())
            )
            predictions = json.loads(answer)["predictions"]
            labels_equal, worst = True, 0.0
            for item, line in zip(predictions, expected):
                for column, text in zip(header, line):
                    if isinstance(item[column], str):
                        labels_equal &= item[column] == text
                    else:
                        worst = max(worst, abs(item[column] - float(text)))
            status_csv, answer_csv = one_request(
                server.port, _request(f"/models/{name}/predict", data.read_bytes(), "text/csv")
            )
            results[name] = {
                "rows": len(expected),
                "labels_identical": status == 200 and len(predictions) == len(expected) and labels_equal,
                "largest_difference": worst,
                "csv_bytes_equal": status_csv == 200 and answer_csv == predictions_csv(header, expected).encode(),
            }
    finally:
        server.stop()
    return results


def _print_cpu(latency: dict) -> None:
    """CPU per request, the figure a busy machine does not move, and the rate it allows."""
    for server, rounds in latency.items():
        costs = [figures["server_cpu_us"] for figures in rounds if figures["server_cpu_us"] is not None]
        client = statistics.median(figures["client_cpu_us"] for figures in rounds)
        if costs:
            server_us = statistics.median(costs)
            print(
                f"{server}: {server_us:.0f} us of server CPU per request (one core: at most "
                f"{1e6 / server_us:,.0f} requests/s), {client:.0f} us of client CPU; both on one core: "
                f"{1e6 / (server_us + client):,.0f} requests/s"
            )


def _print_latency(latency: dict, clients: int, seconds: float) -> None:
    print(f"{clients} clients x {seconds:g} s, one-row JSON")
    print(
        f"{'server':<24}{'requests':>10}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
        f"{'server CPU us/req':>19}{'client CPU us/req':>19}"
    )
    for server, rounds in latency.items():
        for figures in rounds:
            server_cpu = "n/a" if figures["server_cpu_us"] is None else f"{figures['server_cpu_us']:.0f}"
            print(
                f"{server:<24}{figures['requests']:>10}{figures['errors']:>8}{figures['p50_ms']:>9.2f}"
                f"{figures['p99_ms']:>9.2f}{figures['per_second']:>9.0f}{server_cpu:>19}"
                f"{figures['client_cpu_us']:>19.0f}"
            )
    ours = statistics.median(item["per_second"] for item in latency["dltrain serve"])
    theirs = statistics.median(item["per_second"] for item in latency["FastAPI + onnxruntime"])
    print(f"throughput, dltrain serve / reference (medians): {ours / theirs:.2f}x")
    _print_cpu(latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "iris.yaml")
    parser.add_argument("--reference", help=argparse.SUPPRESS)  # run the reference app on this ONNX file
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)  # run the floor app
    parser.add_argument(
        "--against", type=Path, help="another checkout's src/ folder, whose dltrain serve is loaded in the same rounds"
    )
    parser.add_argument(
        "--only", choices=["latency", "big"], help="only the latency section (the quickest look), or the big request's"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    arguments = parser.parse_args()
    if arguments.reference:
        run_reference(arguments.reference)
        return
    if arguments.floor:
        run_floor()
        return
    arguments.seconds = min(arguments.seconds, 60.0)
    with tempfile.TemporaryDirectory(prefix="dltrain-bench-serve-") as temporary:
        folder = Path(temporary)
        for name in ("configs", "data"):
            shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns(".dltrain-cache"))
        config = folder / "configs" / arguments.config.name
        _dltrain("fit", f"configs/{config.name}", "--quiet", "--out", f"runs/{config.stem}", cwd=folder)
        results: dict = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start"}
        if arguments.only in (None, "latency"):
            results["latency"] = latency_section(
                folder, config, arguments.clients, arguments.seconds, arguments.against
            )
        if arguments.only in (None, "big"):
            results["big_request"] = big_request_section(folder, config, arguments.against)
        if arguments.only is None:
            results["equal_to_predict"] = equality_section(folder)
    if arguments.json:
        print(json.dumps(results, indent=2))
        return
    print(f"dltrain serve bench ({results['machine']})")
    if "latency" in results:
        _print_latency(results["latency"], arguments.clients, arguments.seconds)
    if "big_request" in results:
        _print_big(results["big_request"])
    if arguments.only is not None:
        return
    for name, figures in results["equal_to_predict"].items():
        print(
            f"{name}: {figures['rows']} rows, labels identical {figures['labels_identical']}, largest difference "
            f"{figures['largest_difference']:.1e}, CSV bytes equal {figures['csv_bytes_equal']}"
        )


if __name__ == "__main__":
    main()
