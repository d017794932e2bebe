"""`dltrain serve`: load the runs, bind the port, answer until SIGTERM, Ctrl-C or SIGHUP.

The runs are loaded (and a damaged one refused) before the port is bound; /health answers 503
until each model has been warmed up. SIGTERM, SIGINT and SIGHUP stop accepting connections, let the
requests in flight finish, and exit 0. With --workers N the loaded runs are shared by N forked
processes on one socket (a worker that dies is replaced from the same loaded runs)."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import signal
import socket
from typing import Callable

from ... import signals, system
from ...errors import DltrainError

INSTALL_HINT = "pip install '.[serve]'"
TOKEN_VARIABLE = "DLTRAIN_SERVE_TOKEN"
_GRACE_SECONDS = 30  # in-flight requests get this long after SIGTERM before they are cut


def _modules():
    try:
        import orjson  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise DltrainError(
            f"dltrain serve needs the serve extra ({error.name} is not installed); from the project "
            f"folder, install it with: {INSTALL_HINT}"
        ) from None
    return uvicorn


def token_from_environment() -> str | None:
    token = os.environ.get(TOKEN_VARIABLE)
    if token is None:
        return None
    if not token.strip() or token != token.strip():
        raise DltrainError(
            f"{TOKEN_VARIABLE} is set but {'empty' if not token.strip() else 'has spaces around it'}; "
            "give it a token without spaces (e.g. from: python -c 'import secrets; print(secrets.token_urlsafe())'), "
            "or unset it to serve without one"
        )
    return token


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or one message saying why not."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as error:
        raise DltrainError(f"--host {host}: not an address of this machine ({error}); e.g. 127.0.0.1") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise DltrainError(
                f"--port {port}: {host}:{port} is in use (another server?); stop it or give another --port"
            ) from None
        raise DltrainError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error})") from None
    listener.set_inheritable(True)
    return listener


def _uvicorn_server(uvicorn, app):
    class Server(uvicorn.Server):
        """uvicorn's server, but a signal ends it with exit code 0 instead of being raised again."""

        def capture_signals(self):
            return signals.calling(self.handle_exit)

    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=_GRACE_SECONDS,
        server_header=False,
    )
    return Server(config)


def serve(
    runs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_body_mb: float = 10.0,
    max_rows: int = 100_000,
    log: Callable[[str], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve ``runs`` until a stop signal (SIGTERM, SIGINT, SIGHUP). ``log`` takes the access lines (None: --quiet),
    ``announce`` the lines about the server itself (where it listens, warnings, ready)."""
    uvicorn = _modules()
    from .app import Settings, create_app
    from .models import load_models

    if workers < 1 or max_rows < 1 or not max_body_mb > 0:
        raise DltrainError("--workers, --max-rows and --max-body must be at least 1 (--max-body: above 0)")
    if workers > 1 and not system.CAN_FORK:
        raise DltrainError(
            f"--workers {workers}: several workers are forked processes, and this system cannot fork "
            "(Windows); serve with one worker (leave --workers out)"
        )
    say = announce or (lambda line: None)
    settings = Settings(int(max_body_mb * 2**20), max_rows, token_from_environment())
    models = load_models(runs)
    listener = bind(host, port)
    bound_port = listener.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    if not is_local(host):
        say(
            f"warning: --host {host} accepts connections from other machines"
            + ("" if settings.token else f"; set {TOKEN_VARIABLE} so that only your clients are answered")
        )
    names = ", ".join(f"{model.name} ({model.run.run_dir})" for model in models)
    say(f"serving {names} at http://{shown_host}:{bound_port} (POST /predict, GET /metadata, GET /health)")
    app = create_app(models, settings, log, announce)
    if workers == 1:
        _uvicorn_server(uvicorn, app).run(sockets=[listener])
        return
    _run_workers(workers, lambda: _uvicorn_server(uvicorn, app).run(sockets=[listener]), say)


def _run_workers(count: int, run_worker: Callable[[], None], say: Callable[[str], None]) -> None:
    """Fork ``count`` workers running ``run_worker``; pass a stop signal on to them as SIGTERM,
    replace a worker that dies on its own, and return when all have stopped."""
    stopping = False
    children: set[int] = set()

    def start_one():
        pid = os.fork()
        if pid == 0:  # the worker: Ctrl-C reaches it through the parent, as a single SIGTERM
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            code = 0
            try:
                run_worker()
            except BaseException:
                code = 1
            os._exit(code)
        children.add(pid)

    def stop(number, frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    with signals.calling(stop):
        for _ in range(count):
            start_one()
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            children.discard(pid)
            if not stopping:
                say(f"warning: worker {pid} stopped ({_how(status)}); starting another")
                start_one()


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
