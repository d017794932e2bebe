"""The HTTP face of served runs: a Starlette app (measured ~2.5x FastAPI's throughput on a
one-row request here, and the bodies are parsed by hand anyway, to name rows and columns).

Routes: GET /health, /metadata, /models, /models/{name}; POST /predict and
/models/{name}/predict (JSON rows or columns, or a CSV body); the KServe V2 paths under /v2.
No route takes a path: a model is only ever one of the names loaded at start."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import DltrainError
from ...files import text_codec
from ...predictions import predictions_from_features
from ..predict import predict_table, predictions_csv
from .batching import Batcher
from .fast_path import JsonPredictPath
from .models import ServedModel, warm_up_features
from .wire import (
    BUG_MESSAGE,
    CSV_SOURCE,
    RequestError,
    from_user_error,
    json_cells,
    predictions_json,
    too_large,
    v2_cells,
    v2_outputs,
)

# Bodies above this are parsed, and answers above this many rows written, on a worker thread,
# so that one big request does not hold up the event loop's other clients.
_BIG_BODY = 256 * 1024
_BIG_ANSWER_ROWS = 2000


@dataclass
class Settings:
    max_body: int  # bytes
    max_rows: int
    token: str | None = None  # DLTRAIN_SERVE_TOKEN: every request needs Authorization: Bearer <token>


def _json(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(data).encode(), status, headers, media_type="application/json")


def _error(error: RequestError, headers: dict | None = None) -> Response:
    return Response(error.body(), error.status, headers, media_type="application/json")


class _Guard:
    """ASGI middleware: the token check before anything else, JSON predictions to the fast path,
    and one access line per request (method, path, status, rows, milliseconds; never a header,
    so never the token). The lines of the requests answered in one turn of the event loop are
    handed to ``log`` together, one write instead of one per request."""

    def __init__(self, app, fast: JsonPredictPath, token: str | None, log: Callable[[str], None] | None):
        self.app, self.fast, self.log = app, fast, log
        self.token = token.encode() if token else None
        self.lines: list[str] = []  # access lines waiting for the end of the loop's turn

    def _access_line(self, line: str) -> None:
        if not self.lines:
            asyncio.get_running_loop().call_soon(self._write_lines)
        self.lines.append(line)

    def _write_lines(self) -> None:
        lines, self.lines = self.lines, []
        if lines and self.log is not None:
            self.log("\n".join(lines))

    def _authorized(self, scope) -> bool:
        if self.token is None:
            return True
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                # compare_digest takes as long whatever the bytes, so the token cannot be guessed by timing
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            try:
                return await self.app(scope, receive, send)
            finally:  # the lifespan's end: no line left unwritten
                self._write_lines()
        started = time.perf_counter()
        status = 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if not self._authorized(scope):
                error = RequestError(
                    401,
                    "this server needs a token: send the header Authorization: Bearer <token>, with "
                    "the DLTRAIN_SERVE_TOKEN the server was started with",
                )
                await _error(error, {"WWW-Authenticate": "Bearer"})(scope, receive, sending)
            elif (model := self.fast.model_for(scope)) is not None:
                await self.fast(model, scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        finally:
            if self.log is not None:
                rows = scope.get("state", {}).get("rows", "-")
                path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
                self._access_line(
                    f"{scope['method']} {path} {status} {rows} {(time.perf_counter() - started) * 1e3:.1f}ms"
                )


def create_app(
    models: list[ServedModel],
    settings: Settings,
    log: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
    before_warm_up: Callable[[], Awaitable[None]] | None = None,
):
    """The ASGI app serving ``models``: ``log`` takes the access lines, one per request (None: none;
    those of one turn of the event loop in one call, joined by newlines),
    ``announce`` the line saying the models are ready. ``before_warm_up`` is awaited before the
    models are warmed up (tests hold /health at 503 with it)."""
    service = Service(models, settings, announce, before_warm_up)
    app = Starlette(
        routes=service.routes(),
        lifespan=service.lifespan,
        exception_handlers={
            RequestError: _request_error,
            DltrainError: _user_error,
            HTTPException: _http_error,
            Exception: _bug,
        },
    )
    app.state.batchers = service.batchers
    return _Guard(app, JsonPredictPath(service), settings.token, log)


class Service:
    """The served models and what their routes share (the batchers, whether they are warmed up);
    each route is a method."""

    def __init__(
        self,
        models: list[ServedModel],
        settings: Settings,
        announce: Callable[[str], None] | None,
        before_warm_up: Callable[[], Awaitable[None]] | None,
    ):
        self.models, self.settings = models, settings
        self.announce, self.before_warm_up = announce, before_warm_up
        self.by_name = {model.name: model for model in models}
        self.batchers = {model.name: Batcher(model.name, model.run) for model in models}
        self.default = models[0].name if len(models) == 1 else None
        self.ready = asyncio.Event()

    def routes(self) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/metadata", self.metadata),
            Route("/models", self.model_names),
            Route("/models/{name}", self.metadata),
            Route("/predict", self.predict, methods=["POST"]),
            Route("/models/{name}/predict", self.predict, methods=["POST"]),
            Route("/v2/health/live", self.v2_live),
            Route("/v2/health/ready", self.v2_ready),
            Route("/v2/models/{name}", self.v2_model),
            Route("/v2/models/{name}/ready", self.v2_ready),
            Route("/v2/models/{name}/infer", self.v2_infer, methods=["POST"]),
        ]

    # ------------------------------------------------------------ start and stop

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        for batcher in self.batchers.values():
            batcher.start()
        warming = asyncio.get_running_loop().create_task(self.warm_up())
        try:
            yield
        finally:
            warming.cancel()
            await asyncio.gather(warming, return_exceptions=True)
            for batcher in self.batchers.values():
                await batcher.stop()

    async def warm_up(self):
        if self.before_warm_up is not None:
            await self.before_warm_up()
        started = time.perf_counter()
        for model in self.models:  # the network once on the model's thread: BLAS, and the kernels where they run
            features = warm_up_features(model.run.schema)
            await self.batchers[model.name].call(lambda run=model.run, x=features: predictions_from_features(run, x))
        self.ready.set()
        if self.announce is not None:
            count = len(self.models)
            self.announce(
                f"ready: {count} model{'s' if count > 1 else ''} warmed up in {time.perf_counter() - started:.2f}s"
            )

    # ------------------------------------------------------------ what every route needs

    def model_of(self, request: Request) -> ServedModel:
        name = request.path_params.get("name", self.default)
        if name is None:
            raise RequestError(
                404, f"several models are served ({', '.join(self.by_name)}); POST to /models/NAME/predict", model=None
            )
        if name not in self.by_name:
            raise RequestError(404, f"no model named {name!r}; served: {', '.join(self.by_name)}")
        return self.by_name[name]

    def check_ready(self):
        if not self.ready.is_set():
            raise RequestError(503, "the models are still loading; retry in a second (GET /health says when)")

    async def body_of(self, request: Request) -> bytes:
        limit = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(int(declared), limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------ dltrain's routes

    async def health(self, request: Request) -> Response:
        if not self.ready.is_set():
            return _json({"status": "loading", "models": list(self.by_name)}, 503, {"Retry-After": "1"})
        return _json({"status": "ready", "models": list(self.by_name)})

    async def metadata(self, request: Request) -> Response:
        if "name" in request.path_params or self.default is not None:
            return _json(self.model_of(request).metadata)
        return _json({"models": [model.metadata for model in self.models]})

    async def model_names(self, request: Request) -> Response:
        return _json({"models": list(self.by_name), "default": self.default})

    async def predict(self, request: Request) -> Response:
        model = self.model_of(request)
        self.check_ready()
        body = await self.body_of(request)
        kind, _, parameters = request.headers.get("content-type", "").partition(";")
        kind = kind.strip().lower()
        if kind in ("text/csv", "application/csv"):
            return await self.predict_csv(request, model, body, parameters)
        if kind != "application/json" and not kind.endswith("+json"):
            raise RequestError(
                415,
                f"Content-Type {kind or '(none)'}: send JSON with Content-Type: application/json, "
                "or a CSV file with Content-Type: text/csv",
            )
        return Response(await self.json_answer(model, body, request.scope), media_type="application/json")

    async def json_answer(self, model: ServedModel, body: bytes, scope) -> bytes:
        """The JSON answer to a JSON body (the Starlette route's and JsonPredictPath's); the rows
        go to the access line through ``scope["state"]``, as ``request.state.rows`` puts them."""
        parse = lambda: json_cells(body, model.run.schema, self.settings.max_rows)  # noqa: E731
        cells, n_rows, by_columns = await run_in_threadpool(parse) if len(body) > _BIG_BODY else parse()
        scope.setdefault("state", {})["rows"] = n_rows
        predictions = await self.batchers[model.name].predict(cells, n_rows)
        if n_rows > _BIG_ANSWER_ROWS:
            return await run_in_threadpool(predictions_json, predictions, by_columns)
        return predictions_json(predictions, by_columns)

    async def predict_csv(self, request: Request, model: ServedModel, body: bytes, parameters: str) -> Response:
        """A CSV body, read as ``dltrain predict`` reads a file; the answer is predict's CSV."""
        max_rows = self.settings.max_rows
        if body.count(b"\n") > max_rows + 1:
            raise RequestError(
                413,
                f"the CSV body has more than {max_rows:,} lines, the most this server takes "
                "(dltrain serve --max-rows); send it in several requests",
            )
        dialect = {
            "delimiter": None,
            "encoding": _csv_charset(parameters, model, body),
            "encoding_setting": "a charset: Content-Type: text/csv; charset=…",
        }
        keep = request.query_params.getlist("keep")
        header, rows = await self.batchers[model.name].call(
            lambda: predict_table(model.run, Path(CSV_SOURCE), keep, dialect, content=body)
        )
        request.state.rows = len(rows)
        text = await run_in_threadpool(predictions_csv, header, rows)
        return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8")

    # ------------------------------------------------------------ KServe V2 (Triton, KServe clients)

    async def v2_live(self, request: Request) -> Response:
        return _json({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return _json({"ready": self.ready.is_set()}, 200 if self.ready.is_set() else 503)

    async def v2_model(self, request: Request) -> Response:
        model = self.model_of(request)
        schema = model.run.schema
        inputs = [
            {"name": column.name, "datatype": "FP32" if column.type == "numeric" else "BYTES", "shape": [-1]}
            for column in schema.columns
        ]
        if schema.task == "classification":
            outputs = [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(schema.class_labels)]},
            ]
        else:
            outputs = [{"name": "prediction", "datatype": "FP32", "shape": [-1, len(schema.targets)]}]
        return _json({"name": model.name, "versions": [], "platform": "dltrain", "inputs": inputs, "outputs": outputs})

    async def v2_infer(self, request: Request) -> Response:
        model = self.model_of(request)
        self.check_ready()
        body = await self.body_of(request)
        parse = lambda: v2_cells(body, model.run.schema, self.settings.max_rows)  # noqa: E731
        cells, n_rows = await run_in_threadpool(parse) if len(body) > _BIG_BODY else parse()
        request.state.rows = n_rows
        predictions = await self.batchers[model.name].predict(cells, n_rows)
        return Response(v2_outputs(model.name, predictions), media_type="application/json")


# ---------------------------------------------------------------- errors, each one JSON answer


async def _request_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestError)
    return _error(error)


async def _user_error(request: Request, error: Exception) -> Response:
    return _error(from_user_error(str(error)))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        message = f"no such path {request.url.path}; see GET /metadata and POST /predict"
    elif error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "another method")
        message = f"{request.method} {request.url.path} is not allowed; use {allowed}"
    else:
        message = str(error.detail)
    return _error(RequestError(error.status_code, message), error.headers)


async def _bug(request: Request, error: Exception) -> Response:
    # Starlette raises the error again after this answer, and uvicorn logs its traceback.
    return _error(RequestError(500, BUG_MESSAGE))


def _csv_charset(parameters: str, model: ServedModel, body: bytes) -> str | None:
    """The charset the Content-Type names; else, for a body that is not UTF-8, the encoding the run
    was trained with (as predict reads a file); else None (UTF-8)."""
    charset = None
    for parameter in parameters.split(";"):
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    if charset is None and _trained_in_other_codec(model.run.schema.encoding) and not _utf8(body):
        charset = model.run.schema.encoding
    return charset


def _trained_in_other_codec(encoding: str) -> bool:
    try:
        return text_codec(encoding) != text_codec("utf-8")
    except ValueError:
        return False


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
