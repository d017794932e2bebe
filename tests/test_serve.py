"""`dltrain serve`: a real server on 127.0.0.1 (a free port), started and stopped by the tests.

Most tests share one server holding two runs (iris and a customers model with categorical,
boolean and filled columns); the token, SIGTERM and kill -9 tests start their own."""

import asyncio
import csv
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from dltrain.api import load as load_run
from dltrain.cli import app
from dltrain.commands import fit
from dltrain.commands.predict import predict_rows, predictions_csv
from dltrain.predictions import predict_cells

pytest.importorskip("uvicorn")

CUSTOMERS_CONFIG = """\
name: customers
data:
  train: customers.csv
  target: member
  features: [age, region, monthly_spend, signup_date]
  missing: mode
  na_values: ["?"]
  columns:
    age: {missing: median}
    monthly_spend: {missing: mean, na_values: ["-1"]}
    signup_date: {type: date, missing: median}
model:
  layers: [{units: 8, activation: relu}]
train: {epochs: 3}
"""
IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Server:
    """``dltrain serve ... --port 0`` in a subprocess; the port is read from its first line."""

    def __init__(self, folder, arguments, env=None, wait_ready=True):
        self.log_path = folder / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        command = [sys.executable, "-m", "dltrain", "serve", *map(str, arguments), "--port", "0"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=folder, start_new_session=True
        )
        deadline = time.monotonic() + 30
        self.port = None
        while self.port is None:
            found = re.search(r"at http://127\.0\.0\.1:(\d+)", self.output())
            if found:
                self.port = int(found.group(1))
            elif self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.output()}")
            else:
                time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, timeout=30)
        while wait_ready and self.get("/health", token=(env or {}).get("DLTRAIN_SERVE_TOKEN")).status_code != 200:
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def output(self) -> str:
        return self.log_path.read_text()

    def get(self, path, token=None):
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})

    def post(self, path, **kwargs):
        return self.client.post(path, **kwargs)

    def stop(self, number=signal.SIGTERM, timeout=30) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(number)
        code = self.process.wait(timeout)
        self.log.close()
        return code


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Trained runs: iris (as shipped) and customers (categorical, boolean target, fills)."""
    folder = tmp_path_factory.mktemp("serve_runs")
    for name in ("configs", "data"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns(".dltrain-cache"))
    shutil.copy(ROOT / "docs" / "examples" / "customers.csv", folder / "customers.csv")
    (folder / "customers.yaml").write_text(CUSTOMERS_CONFIG)
    fit.fit(folder / "configs" / "iris.yaml", out=folder / "iris")
    fit.fit(folder / "customers.yaml", out=folder / "customers")
    return folder


@pytest.fixture(scope="module")
def server(runs):
    """One server for most tests: both runs, served from copies (one of them gets replaced)."""
    for name in ("iris", "customers"):
        shutil.copytree(runs / name, runs / "served" / name)
    running = Server(
        runs, [runs / "served" / "iris", runs / "served" / "customers", "--max-body", "0.5", "--max-rows", "1000"]
    )
    yield running
    assert running.stop(signal.SIGHUP) == 0, running.output()  # a closed terminal stops it as SIGTERM does


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_same_as_predict(answer, header, expected_rows):
    """JSON predictions against predict's text: labels identical, numbers within 1e-6."""
    assert len(answer) == len(expected_rows)
    for item, expected in zip(answer, expected_rows):
        assert list(item) == header
        for name, text in zip(header, expected):
            if isinstance(item[name], str):
                assert item[name] == text
            else:
                assert np.float32(item[name]) == np.float32(float(text)), (name, item[name], text)
                assert abs(item[name] - float(text)) <= 1e-6 * max(1.0, abs(float(text)))


def test_health_is_503_until_every_model_is_warmed_up(runs):
    """In-process uvicorn with the warm-up held back: /health is 503, predictions too; then 200."""
    import uvicorn

    from dltrain.commands.serve.app import Settings, create_app
    from dltrain.commands.serve.models import load_models
    from dltrain.commands.serve.server import bind

    released = threading.Event()

    async def hold():
        while not released.is_set():
            await asyncio.sleep(0.01)

    application = create_app(load_models([str(runs / "iris")]), Settings(1 << 20, 1000), before_warm_up=hold)
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(application, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    before = client.get("/health")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            assert before.status_code == 503 and before.json()["status"] == "loading"
            early = client.post("/predict", json={"rows": [IRIS_ROW]})
            assert early.status_code == 503 and "GET /health" in early.json()["error"]
            released.set()
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert client.get("/health").json() == {"status": "ready", "models": ["iris"]}
            assert client.post("/predict", json={"rows": [IRIS_ROW]}).json()["predictions"][0]["species"] == "setosa"
    finally:
        server.should_exit = True
        thread.join(10)


def test_metadata_describes_each_model(server, runs):
    listing = server.get("/metadata").json()
    assert [model["name"] for model in listing["models"]] == ["iris", "customers"]
    assert server.get("/models").json() == {"models": ["iris", "customers"], "default": None}
    iris = server.get("/models/iris").json()
    manifest = json.loads((runs / "iris" / "model.json").read_text())
    assert iris["task"] == "classification" and iris["targets"] == ["species"]
    assert iris["class_labels"] == ["setosa", "versicolor", "virginica"]
    assert iris["model_sha256"] == manifest["model_sha256"]
    assert iris["trained_at"] == manifest["run"]["ended"] and iris["dltrain_version"]
    assert [column["name"] for column in iris["inputs"]] == list(IRIS_ROW)
    customers = {column["name"]: column for column in server.get("/models/customers").json()["inputs"]}
    assert customers["region"]["kind"] == "categorical" and customers["region"]["categories"] == [
        "east",
        "north",
        "south",
        "west",
    ]
    assert customers["age"] == {"name": "age", "kind": "numeric", "missing": "median", "fill": 51.0, "na_values": ["?"]}
    assert customers["monthly_spend"]["na_values"] == ["-1", "?"]
    assert customers["signup_date"]["kind"] == "date" and customers["signup_date"]["parts"]


def test_json_rows_and_columns_give_predicts_numbers(server, runs):
    for name, data in (("iris", runs / "data" / "iris.csv"), ("customers", runs / "customers.csv")):
        header, expected = predict_rows(runs / name, data)
        rows = _rows(data)
        answer = server.post(f"/models/{name}/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        _assert_same_as_predict(answer.json()["predictions"], header, expected)
        columns = {key: [row[key] for row in rows] for key in rows[0]}
        by_columns = server.post(f"/models/{name}/predict", json={"columns": columns}).json()["predictions"]
        assert list(by_columns) == header  # columns in, columns out: the same values
        assert [dict(zip(by_columns, row)) for row in zip(*by_columns.values())] == answer.json()["predictions"]
    # JSON numbers, null and the NA tokens are cells as in a CSV: a missing age takes the median.
    # The data.na_values markers too (?, and -1 in monthly_spend only); a date as the CSV writes it.
    cells = [
        {"age": None, "region": "NA", "monthly_spend": 70.5, "signup_date": "2024-09-20"},
        {"age": "?", "region": "north", "monthly_spend": 70.5, "signup_date": "2024-09-20"},
        {"age": 51, "region": "north", "monthly_spend": 70.5, "signup_date": "2024-09-20"},
    ]
    first, second, third = server.post("/models/customers/predict", json={"rows": cells}).json()["predictions"]
    assert _close(first, second) and _close(second, third)
    spend = [dict(cells[2], monthly_spend=-1), dict(cells[2], monthly_spend=None), dict(cells[2], age=-1)]
    missing, empty, minus_one_age = server.post("/models/customers/predict", json={"rows": spend}).json()["predictions"]
    assert _close(missing, empty) and not _close(missing, minus_one_age)


def _close(one: dict, other: dict) -> bool:
    """The same prediction up to float32 rounding (BLAS may round a row differently by its place in a batch)."""
    return one.keys() == other.keys() and all(
        one[key] == other[key] if isinstance(one[key], str) else abs(one[key] - other[key]) <= 1e-6 for key in one
    )


def test_a_csv_body_answers_predicts_bytes(server, runs):
    for name, data in (("iris", runs / "data" / "iris.csv"), ("customers", runs / "customers.csv")):
        expected = predictions_csv(*predict_rows(runs / name, data)).encode()
        answer = server.post(f"/models/{name}/predict", content=data.read_bytes(), headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert answer.content == expected
    # The dialect is sniffed as predict sniffs a file's: ';'-separated with a BOM and CRLF.
    text = (runs / "data" / "iris.csv").read_text().replace(",", ";").replace("\n", "\r\n")
    semicolons = runs / "iris-semicolons.csv"
    semicolons.write_bytes(b"\xef\xbb\xbf" + text.encode())
    answer = server.post("/models/iris/predict", content=semicolons.read_bytes(), headers={"Content-Type": "text/csv"})
    assert answer.content == predictions_csv(*predict_rows(runs / "iris", semicolons)).encode()
    kept = server.post(
        "/models/customers/predict?keep=customer_id",
        content=(runs / "customers.csv").read_bytes(),
        headers={"Content-Type": "text/csv"},
    )
    assert (
        kept.text.splitlines()[:2]
        == predictions_csv(
            *predict_rows(runs / "customers", runs / "customers.csv", keep=["customer_id"])
        ).splitlines()[:2]
    )


def test_a_csv_body_in_the_runs_encoding_is_read_as_predict_reads_the_file(runs, tmp_path):
    """A body that is not UTF-8, sent without a charset, is read in the encoding the run was trained with."""
    text = (runs / "data" / "iris.csv").read_text().replace("setosa", "sétosa")
    (tmp_path / "iris-latin1.csv").write_bytes(text.encode("latin-1"))
    config = (runs / "configs" / "iris.yaml").read_text().replace("../data/iris.csv", "iris-latin1.csv")
    (tmp_path / "iris.yaml").write_text(config)
    fit.fit(tmp_path / "iris.yaml", overrides=["data.encoding=latin-1", "train.epochs=2"], out=tmp_path / "run")
    expected = predictions_csv(*predict_rows(tmp_path / "run", tmp_path / "iris-latin1.csv")).encode()
    assert "sétosa" in expected.decode()
    running = Server(tmp_path, [tmp_path / "run"])
    try:
        answer = running.post("/predict", content=text.encode("latin-1"), headers={"Content-Type": "text/csv"})
        assert answer.status_code == 200 and answer.content == expected
        named = running.post(
            "/predict", content=text.encode("latin-1"), headers={"Content-Type": "text/csv; charset=latin-1"}
        )
        assert named.content == expected
    finally:
        assert running.stop() == 0


BAD_DATE = {"rows": [{"age": 30, "region": "east", "monthly_spend": 1, "signup_date": "soon"}]}
BAD_REQUESTS = [
    # (path, body, content type, status, words in the error, row, column)
    (
        "/models/iris/predict",
        {"rows": [{**IRIS_ROW, "sepal_width": "wide"}]},
        None,
        422,
        "not a number",
        0,
        "sepal_width",
    ),
    ("/models/iris/predict", {"rows": [IRIS_ROW, {"sepal_length": 5.0}]}, None, 422, "absent", 1, "sepal_width"),
    ("/models/iris/predict", {"columns": {"sepal_length": [5.0]}}, None, 422, "not found", None, "sepal_width"),
    ("/models/iris/predict", {"rows": [{**IRIS_ROW, "petal_width": None}]}, None, 422, "fill it in", 0, "petal_width"),
    ("/models/iris/predict", {"rows": [{**IRIS_ROW, "petal_width": "1e999"}]}, None, 422, "finite", 0, "petal_width"),
    ("/models/iris/predict", {"rows": [{**IRIS_ROW, "petal_width": 1e300}]}, None, 422, "float32", 0, "petal_width"),
    ("/models/iris/predict", {"rows": [{**IRIS_ROW, "petal_width": [1]}]}, None, 422, "a list", 0, "petal_width"),
    (
        "/models/iris/predict",
        {"rows": [{**IRIS_ROW, "sepal_length": True}]},
        None,
        422,
        "'true', which is not a number",
        0,
        "sepal_length",
    ),
    ("/models/iris/predict", {"rows": [3]}, None, 422, "not an object", 0, None),
    ("/models/iris/predict", {"rows": []}, None, 422, "at least one row", None, None),
    ("/models/iris/predict", {"columns": {"sepal_length": 5}}, None, 422, "must be a list", None, "sepal_length"),
    ("/models/iris/predict", {"table": []}, None, 422, '{"rows"', None, None),
    ("/models/iris/predict", b"{not json", "application/json", 400, "not JSON", None, None),
    ("/models/iris/predict", b"a=1", "application/x-www-form-urlencoded", 415, "text/csv", None, None),
    ("/models/iris/predict", b"sepal_length,sepal_width\n1,2\n", "text/csv", 422, "not found", 1, "petal_length"),
    (
        "/models/iris/predict",
        b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3\n",
        "text/csv",
        422,
        "3 fields",
        2,
        None,
    ),
    (
        "/models/iris/predict",
        b"sepal_length,sepal_width,petal_length,petal_width\n1,2,x,4\n",
        "text/csv",
        422,
        "not a number",
        2,
        "petal_length",
    ),
    (
        "/models/customers/predict",
        {"rows": [{"age": 30, "region": "mars", "monthly_spend": 1, "signup_date": None}]},
        None,
        422,
        "never saw",
        0,
        "region",
    ),
    ("/models/customers/predict", BAD_DATE, None, 422, "soon", 0, "signup_date"),
    (
        "/models/iris/predict",
        b"sepal_length,sepal_width,petal_length,petal_width\n\xff,1,1,1\n",
        "text/csv",
        422,
        "charset: Content-Type: text/csv; charset=",
        2,
        None,
    ),
    ("/predict", {"rows": [IRIS_ROW]}, None, 404, "several models", None, None),
    ("/models/nope/predict", {"rows": [IRIS_ROW]}, None, 404, "no model named 'nope'", None, None),
    ("/models/..%2F..%2Fetc%2Fpasswd/predict", {"rows": [IRIS_ROW]}, None, 404, "no such path", None, None),
]


@pytest.mark.parametrize("path, body, kind, status, words, row, column", BAD_REQUESTS)
def test_a_wrong_request_is_a_4xx_naming_the_row_and_column(server, path, body, kind, status, words, row, column):
    if isinstance(body, bytes):
        answer = server.post(path, content=body, headers={"Content-Type": kind})
    else:
        answer = server.post(path, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert words in error["error"]
    assert error.get("row", error.get("line")) == row
    assert error.get("column") == column


def test_limits_on_body_size_and_rows(server, runs):
    big = {"rows": [IRIS_ROW] * 20000}  # about 1.6 MB, over --max-body 0.5
    answer = server.post("/models/iris/predict", json=big)
    assert answer.status_code == 413 and "--max-body" in answer.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 10000

    streamed = server.post("/models/iris/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    many = server.post(
        "/models/iris/predict", json={"columns": {key: [value] * 1001 for key, value in IRIS_ROW.items()}}
    )
    assert many.status_code == 413 and "--max-rows" in many.json()["error"]
    assert server.get("/health").status_code == 200  # and the server is still fine


def test_200_concurrent_requests_are_all_answered_correctly(server, runs):
    header, expected = predict_rows(runs / "iris", runs / "data" / "iris.csv")
    rows = _rows(runs / "data" / "iris.csv")
    order = [index % len(rows) for index in range(200)]

    async def ask_all():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/models/iris/predict", json={"rows": [rows[index]]}) for index in order)
            )

    answers = asyncio.run(ask_all())
    assert [answer.status_code for answer in answers] == [200] * 200
    for index, answer in zip(order, answers):
        _assert_same_as_predict(answer.json()["predictions"], header, [expected[index]])


def test_the_event_loop_answers_while_a_big_prediction_runs(server, runs):
    text = (runs / "data" / "iris.csv").read_text()
    body = (text + "".join(text.splitlines(keepends=True)[1:]) * 5).encode()  # 900 rows, under --max-rows
    statuses = []

    def post_csv():
        for _ in range(10):
            answer = server.post("/models/iris/predict", content=body, headers={"Content-Type": "text/csv"})
            statuses.append(answer.status_code)

    posting = threading.Thread(target=post_csv)
    posting.start()
    waits = []
    with httpx.Client(base_url=server.base, timeout=30) as client:
        while posting.is_alive():
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            waits.append(time.perf_counter() - started)
    posting.join()
    assert statuses == [200] * 10
    assert len(waits) > 3 and statistics.median(waits) < 0.1, waits


def test_a_prediction_that_overflows_is_a_4xx_never_invalid_json(server):
    huge = {key: 3e38 for key in IRIS_ROW}
    answer = server.post("/models/iris/predict", json={"rows": [IRIS_ROW, huge]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["row"] == 1 and "not a finite number" in answer.json()["error"]


def test_kserve_v2_paths(server, runs):
    assert server.get("/v2/health/ready").json() == {"ready": True}
    described = server.get("/v2/models/iris").json()
    assert [item["name"] for item in described["inputs"]] == list(IRIS_ROW)
    inputs = [
        {"name": key, "shape": [2], "datatype": "FP32", "data": [value, value]} for key, value in IRIS_ROW.items()
    ]
    answer = server.post("/v2/models/iris/infer", json={"inputs": inputs}).json()
    label, probabilities = answer["outputs"]
    assert label["data"] == ["setosa", "setosa"] and probabilities["shape"] == [2, 3]


def test_a_run_folder_replaced_while_serving_keeps_the_loaded_model(server, runs):
    before = server.post("/models/iris/predict", json={"rows": [IRIS_ROW]}).json()
    served = runs / "served" / "iris"
    shutil.rmtree(served)
    shutil.copytree(runs / "customers", served)  # another model in its place, as fit --force would leave
    assert server.post("/models/iris/predict", json={"rows": [IRIS_ROW]}).json() == before
    assert server.get("/models/iris").json()["task"] == "classification"
    log = server.output()
    assert re.search(r"^POST /models/iris/predict 200 1 \d+\.\dms$", log, re.M), log


def test_the_token_is_required_compared_and_never_logged(runs):
    token = "s3cret-token-for-the-test"
    env = {**os.environ, "DLTRAIN_SERVE_TOKEN": token}
    running = Server(runs, [runs / "iris"], env=env)
    try:
        assert running.get("/health").status_code == 401
        missing = running.post("/predict", json={"rows": [IRIS_ROW]})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in missing.json()["error"]
        wrong = running.post("/predict", json={"rows": [IRIS_ROW]}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = running.post("/predict", json={"rows": [IRIS_ROW]}, headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200 and right.json()["predictions"][0]["species"] == "setosa"
    finally:
        assert running.stop(signal.SIGINT) == 0  # Ctrl-C stops it as SIGTERM does
    assert token not in running.output()


def _send(port, path, body: bytes, kind: str) -> socket.socket:
    """A whole HTTP request written on a new connection; the answer is read by ``_answer``."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    connection.sendall(head.encode() + body)
    return connection


def _answer(connection: socket.socket) -> tuple[int, bytes]:
    received = b""
    with connection:
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                return 0, received
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split()[1]), body


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(runs):
    running = Server(runs, [runs / "iris"])
    text = (runs / "data" / "iris.csv").read_text()
    body = (text + "".join(text.splitlines(keepends=True)[1:]) * 20).encode()  # 3,150 rows: tens of ms each
    expected = predictions_csv(*predict_rows(runs / "iris", runs / "data" / "iris.csv")).encode()
    in_flight = [_send(running.port, "/predict", body, "text/csv") for _ in range(8)]
    time.sleep(0.2)  # accepted by the server; answered one after another on the model's thread
    running.process.send_signal(signal.SIGTERM)
    answers = [_answer(connection) for connection in in_flight]
    assert running.stop() == 0, running.output()
    assert [status for status, _ in answers] == [200] * 8, running.output()
    assert all(answer.startswith(expected) for _, answer in answers)
    assert running.output().count("POST /predict 200 3150") == 8
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{running.base}/health", timeout=5)


def test_kill_9_leaves_nothing_behind(runs, tmp_path):
    scratch, work = tmp_path / "tmp", tmp_path / "work"
    scratch.mkdir()
    work.mkdir()
    before = sorted(path.name for path in (runs / "iris").iterdir())
    running = Server(work, [runs / "iris"], env={**os.environ, "TMPDIR": str(scratch)})
    answer = running.post(
        "/predict", content=(runs / "data" / "iris.csv").read_bytes(), headers={"Content-Type": "text/csv"}
    )
    assert answer.status_code == 200
    port = running.port
    running.stop(signal.SIGKILL)
    assert list(scratch.iterdir()) == []
    assert [path.name for path in work.iterdir()] == [running.log_path.name]
    assert sorted(path.name for path in (runs / "iris").iterdir()) == before
    with socket.socket() as again:  # the port is free again
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_a_damaged_run_is_refused_at_start_with_one_message(runs, tmp_path):
    damaged = tmp_path / "iris"
    shutil.copytree(runs / "iris", damaged)
    weights = damaged / "model.npz"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    result = CliRunner().invoke(app, ["serve", str(damaged), "--port", "0"])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 2 and "model.npz: checksum mismatch" in lines[0], result.output
    assert lines[1] == "hint: the file is damaged or was changed; train again", result.output
    result = CliRunner().invoke(app, ["serve", str(runs / "iris"), f"{runs / 'iris'}"])
    assert result.exit_code == 2 and "two runs are named 'iris'" in result.output


def test_without_the_serve_extra_the_message_says_what_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(app, ["serve", str(runs / "iris")])
    assert result.exit_code == 2
    assert "pip install '.[serve]'" in result.output and "dltrain[" not in result.output


def test_a_host_other_machines_reach_prints_one_warning(runs, monkeypatch):
    from dltrain.commands.serve import server as serve_module

    monkeypatch.setattr(serve_module, "bind", lambda host, port: serve_module.socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(
        serve_module, "_uvicorn_server", lambda uvicorn, app: type("Stub", (), {"run": lambda *a, **k: None})()
    )
    monkeypatch.delenv("DLTRAIN_SERVE_TOKEN", raising=False)
    said = []
    serve_module.serve([str(runs / "iris")], host="0.0.0.0", announce=said.append)
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0] and "DLTRAIN_SERVE_TOKEN" in warnings[0]
    said.clear()
    serve_module.serve([str(runs / "iris")], host="127.0.0.1", announce=said.append)
    assert not [line for line in said if line.startswith("warning:")]


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_workers_share_the_port_and_a_dead_one_is_replaced(runs):
    running = Server(runs, [runs / "iris", "--workers", "2"])
    try:
        assert len(_children(running.process.pid)) == 2
        os.kill(_children(running.process.pid)[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while "starting another" not in running.output() or len(_children(running.process.pid)) != 2:
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.05)
        answers = [httpx.post(f"{running.base}/predict", json={"rows": [IRIS_ROW]}, timeout=30) for _ in range(20)]
        assert {answer.status_code for answer in answers} <= {200, 503} and answers[-1].status_code == 200
        assert answers[-1].json()["predictions"][0]["species"] == "setosa"
    finally:
        assert running.stop(signal.SIGHUP) == 0, running.output()  # passed on to the workers as SIGTERM


def test_only_loopback_hosts_are_local():
    from dltrain.commands.serve.server import is_local

    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1") and is_local("127.0.0.2")
    assert not is_local("0.0.0.0") and not is_local("192.168.1.4") and not is_local("example.org")


@pytest.mark.parametrize("config", ["iris", "breast_cancer", "diabetes", "digits"])
def test_predict_cells_gives_predicts_numbers_on_every_shipped_dataset(config, tmp_path):
    """The one function the server and the Python API call: the same text as predict, row for row."""
    fit.fit(ROOT / "configs" / f"{config}.yaml", overrides=["train.epochs=2"], out=tmp_path / "run")
    data = ROOT / "data" / f"{config}.csv"
    header, expected = predict_rows(tmp_path / "run", data)
    run = load_run(tmp_path / "run")
    rows = _rows(data)
    as_text = {name: [row[name] for row in rows] for name in run.schema.feature_names}
    as_numbers = {name: [float(cell) for cell in cells] for name, cells in as_text.items()}
    for cells in (as_text, as_numbers):
        predictions = predict_cells(run, cells)
        assert predictions.header == header and predictions.text_rows() == expected


CUSTOMER_ROW = {"signup_date": "2024-09-20", "age": 76, "region": "east", "monthly_spend": 78.53}
_ASGI_REQUESTS = [  # (method, path, body chunks, content type, declared length): each answered by both paths
    ("POST", "/models/iris/predict", [json.dumps({"rows": [IRIS_ROW]}).encode()], "application/json", True),
    (
        "POST",
        "/models/iris/predict",
        [
            b'{"columns": {"sepal_length": [5.1, 6.7], ',
            b'"sepal_width": [3.5, 3.0], "petal_length": [1.4, 5.2], "petal_width": [0.2, 2.3]}}',
        ],
        "application/json",
        False,
    ),
    (
        "POST",
        "/models/customers/predict",
        [json.dumps({"rows": [CUSTOMER_ROW] * 3}).encode()],
        "application/vnd.x+json; charset=utf-8",
        True,
    ),
    ("POST", "/predict", [json.dumps({"rows": [IRIS_ROW]}).encode()], "application/json", True),  # no default: 404
    ("POST", "/models/iris/predict", [b'{"rows": [{"sepal_length": 5'], "application/json", True),  # 400
    ("POST", "/models/iris/predict", [b'{"rows": [{"sepal_length": "wide"}]}'], "application/json", True),  # 422
    (
        "POST",
        "/models/iris/predict",
        [json.dumps({"rows": [{**IRIS_ROW, "petal_width": "x"}]}).encode()],
        "application/json",
        True,
    ),
    ("POST", "/models/iris/predict", [json.dumps({"rows": [IRIS_ROW] * 51}).encode()], "application/json", True),
    ("POST", "/models/iris/predict", [b"{}", b" " * 5000], "application/json", True),  # over the body limit
    ("POST", "/models/iris/predict", [b"{}", b" " * 5000], "application/json", False),  # over it, undeclared
    ("POST", "/models/nobody/predict", [b"{}"], "application/json", True),
    ("POST", "/models/iris/predict", [b"{}"], "text/plain", True),
    (
        "POST",
        "/models/iris/predict",
        [b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,.2\n"],
        "text/csv",
        True,
    ),
    ("GET", "/models/iris/predict", [b""], "application/json", True),
    ("POST", "/models/iris/predict", None, "application/json", False),  # the client goes away: a 500, raised
]


async def _asgi_exchange(app, method, path, chunks, kind, declared):
    """One request to an ASGI app in process: (messages it sent, the exception it raised, if any)."""
    headers = [(b"host", b"test"), (b"content-type", kind.encode())]
    if declared:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    incoming = (
        [{"type": "http.disconnect"}]
        if chunks is None
        else [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "state": {},
    }
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return incoming.pop(0)

    try:
        await app(scope, receive, send)
    except Exception as error:
        return sent, type(error).__name__
    return sent, None


def test_json_predictions_skip_starlette_and_answer_its_bytes(runs, monkeypatch):
    """The plain-ASGI path for JSON predictions: the same status, headers, body, access line and
    raised error as the Starlette route for every request, and Starlette never called for them."""
    from dltrain.commands.serve import app as app_module
    from dltrain.commands.serve.models import load_models

    models = load_models([str(runs / "iris"), str(runs / "customers")])
    logs: dict = {"fast": [], "starlette": []}
    fast, plain = (app_module.create_app(models, app_module.Settings(4096, 50), logs[name].append) for name in logs)
    plain.fast.model_for = lambda scope: None
    starlette_calls: list = []
    starlette = fast.app

    async def recorded(scope, receive, send):
        starlette_calls.append(scope.get("path"))
        await starlette(scope, receive, send)

    fast.app = recorded

    async def exchange_all(failing=False):
        lifespans = []
        for application in (fast, plain):
            queue: asyncio.Queue = asyncio.Queue()
            await queue.put({"type": "lifespan.startup"})
            lifespans.append((queue, asyncio.create_task(application({"type": "lifespan"}, queue.get, _ignore))))
        while (await _asgi_exchange(plain, "GET", "/health", [b""], "", True))[0][0]["status"] != 200:
            await asyncio.sleep(0.01)
        while (await _asgi_exchange(fast, "GET", "/health", [b""], "", True))[0][0]["status"] != 200:
            await asyncio.sleep(0.01)
        results = [
            [await _asgi_exchange(application, *request) for request in _ASGI_REQUESTS[: 1 if failing else None]]
            for application in (fast, plain)
        ]
        for queue, task in lifespans:
            await queue.put({"type": "lifespan.shutdown"})
            await task
        return results

    starlette_calls.clear()
    through_fast, through_starlette = asyncio.run(exchange_all())
    assert through_fast == through_starlette
    statuses = [sent[0]["status"] for sent, _ in through_fast]
    assert statuses == [200, 200, 200, 404, 400, 422, 422, 413, 413, 413, 404, 415, 200, 405, 500]
    assert through_fast[-1][1] == "ClientDisconnect"
    answers = [json.loads(sent[1]["body"])["predictions"] for sent, _ in through_fast[:3]]
    assert len(answers[0]) == 1 and len(answers[1]["species"]) == 2 and len(answers[2]) == 3
    taken = {path for path in starlette_calls if path not in (None, "/health")}  # None: the lifespan
    assert starlette_calls.count("/models/iris/predict") == 3 and taken == {
        "/predict",
        "/models/nobody/predict",
        "/models/iris/predict",
    }
    lines = [[line for text in logs[name] for line in text.split("\n") if "/health" not in line] for name in logs]
    without_ms = [[re.sub(r" [\d.]+ms$", "", line) for line in lines[index]] for index in (0, 1)]
    assert without_ms[0] == without_ms[1] and "POST /models/customers/predict 200 3" in without_ms[0]

    def bug(*arguments):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "predictions_json", bug)
    through_fast, through_starlette = asyncio.run(exchange_all(failing=True))
    assert through_fast == through_starlette and through_fast[0][1] == "RuntimeError"
    assert through_fast[0][0][0]["status"] == 500


async def _ignore(message):
    pass
