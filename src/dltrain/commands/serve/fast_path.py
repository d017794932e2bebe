"""POST /predict (and /models/{name}/predict) with a JSON body, answered as plain ASGI.

The one-row JSON request is what many concurrent clients send, and Starlette's layers cost
more CPU than the request's own work: two middlewares, eleven routes matched in turn, a
Request, a Response and three wrapped ``send`` functions, about a third of the server's time
per request (bench/serve.py). This path answers those requests with the same routine as the
Starlette route (``Service.json_answer``) and the same bytes: status, headers, body, the
error bodies and the 500 after a bug, which is raised again for uvicorn to log. Anything else
(a CSV body, another content type, a model name not served, a path Starlette would redirect)
goes to the Starlette app, which answers it as before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect

from ...errors import DltrainError
from .wire import BUG_MESSAGE, RequestError, from_user_error, too_large

if TYPE_CHECKING:
    from .app import Service
    from .models import ServedModel

_JSON_HEADER = (b"content-type", b"application/json")
_PREFIX, _SUFFIX = "/models/", "/predict"


class JsonPredictPath:
    """Takes the JSON predictions of ``service``'s models; ``model_for`` says whether a request is one."""

    def __init__(self, service: Service):
        self.service = service

    def model_for(self, scope) -> ServedModel | None:
        """The model a POST of JSON to a predict path asks for; None for anything else."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path = scope["path"]
        if path == "/predict":
            name = self.service.default
        elif path.startswith(_PREFIX) and path.endswith(_SUFFIX):
            name = path[len(_PREFIX) : -len(_SUFFIX)]
        else:
            return None
        model = self.service.by_name.get(name) if name else None
        if model is None or not _json_kind(_header(scope, b"content-type")):
            return None
        return model

    async def __call__(self, model: ServedModel, scope, receive, send) -> None:
        started = False  # once the answer is sent, a failure in sending it is only raised
        try:
            self.service.check_ready()
            body = await self._body(scope, receive)
            status, payload = 200, await self.service.json_answer(model, body, scope)
        except RequestError as error:
            status, payload = error.status, error.body()
        except DltrainError as error:
            failure = from_user_error(str(error))
            status, payload = failure.status, failure.body()
        except Exception:  # a bug: the 500 Starlette's error middleware sends, then raised again for the log
            if not started:
                await _answer(send, 500, RequestError(500, BUG_MESSAGE).body())
            raise
        started = True
        await _answer(send, status, payload)

    async def _body(self, scope, receive) -> bytes:
        """The request body, refused past the limit (413) as ``Service.body_of`` refuses it."""
        limit = self.service.settings.max_body
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large(int(declared), limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if message["type"] != "http.request":
                continue
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(size, limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _header(scope, name: bytes) -> str | None:
    """The first header ``name`` (lower case), as Starlette's Headers.get gives it."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _json_kind(content_type: str | None) -> bool:
    kind = (content_type or "").partition(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


async def _answer(send, status: int, payload: bytes) -> None:
    """The answer as Starlette's Response(payload, status, media_type="application/json") sends it."""
    headers = [(b"content-length", str(len(payload)).encode()), _JSON_HEADER]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
