"""Serving a console: the app's shell (login, cross-site guard, errors as
JSON), the address check, and uvicorn inside a daemon's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.errors import RelayError
from relay.web.auth import COOKIE, Gate, cross_site_refusal, same_origin

if TYPE_CHECKING:
    from relay.config import Web

log = logging.getLogger("relay.web")
COMMON = resources.files("relay.web") / "static"
PUBLIC = ("/login", "/logout", "/common/")  # what a visitor who has not logged in may fetch (or post: by Origin)
Handler = Callable[[Request], Awaitable[Response]]
EVENT_POLL = 1.0  # seconds between looks at a store for a page's live view
KEEPALIVE = 15.0  # seconds of quiet after which a comment keeps the connection (and its proxies) open


CONSOLE_NICE = 10  # a console's worker threads' niceness, above its daemon's 0


def _nice() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CONSOLE_NICE)


def lower_priority() -> None:
    """Run this thread below the daemon's: a page rendering or decoding must not slow what the station does."""
    _nice()


def console_pool(workers: int = 2) -> ThreadPoolExecutor:
    """A console's own worker threads, at a lower priority: a request waiting
    for one never holds a thread the daemon decodes or plays in."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="console", initializer=_nice)


class NotFound(RelayError):
    """What a request names is not here (404)."""


class Refused(RelayError):
    """What a request asks is not allowed or not possible now (status given)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def guarded(handler: Handler, statuses: Iterable[tuple[type[Exception], int]] = ()) -> Handler:
    """Every failure one JSON error: what the request asked for wrongly (4xx,
    ``statuses`` maps more exception types), or a bug (500, logged in one
    line); never a traceback page."""
    known = [(NotFound, 404), *statuses, (RelayError, 422)]

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return error(exc.status, str(exc))
        except Exception as exc:
            for kind, status in known:
                if isinstance(exc, kind):
                    return error(status, str(exc))
            log.error("console request %s failed: %s: %s", request.url.path, exc.__class__.__name__, exc)
            return error(500, f"{exc.__class__.__name__}: {exc}")

    return run


class Guard:
    """ASGI middleware: a login where one is configured, and no state change
    from another site (:mod:`relay.web.auth`)."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        public = path.startswith(PUBLIC)
        response: Response | None = None
        if not self.gate.host_ok(request.headers.get("host")):  # another site's name pointed here (DNS rebinding)
            response = error(421, "this console does not answer to that name: reach it by its own address, or add "
                                  "the name to [web] hosts")
        elif not public and not self.gate.allowed(request.cookies.get(COOKIE)):
            response = error(401, "log in first") if path.startswith("/api/") else RedirectResponse("/login", 303)
        elif not public:
            why = cross_site_refusal(request.method, request.headers, self.gate.token, self.gate.hosts)
            if why:
                response = error(403, why)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def login_routes(gate: Gate, station: str) -> list[BaseRoute]:
    async def form(request: Request) -> Response:
        if not gate.needs_login:
            return RedirectResponse("/", 303)
        html = (COMMON / "login.html").read_text(encoding="utf-8").replace("{{station}}", station)
        return HTMLResponse(html.replace("{{failed}}", "" if "failed" not in request.query_params else
                                         '<p class="bad" role="alert">Wrong password, or too many tries: wait a '
                                         "minute.</p>"))

    async def login(request: Request) -> Response:
        if not gate.needs_login:
            return RedirectResponse("/", 303)
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not same_origin(origin, request.headers.get("host"), gate.hosts):
            return error(403, "cross-site request refused")
        client = request.client.host if request.client else "?"
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > 4096:
                return error(413, "the login form is larger than a password")
        if gate.throttled(client) or not await asyncio.to_thread(gate.check_login, body):
            gate.failed(client)
            log.warning("console: failed login from %s", client)
            await asyncio.sleep(0.5)
            return RedirectResponse("/login?failed", 303)
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, gate.session(), max_age=int(gate.session_seconds), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:  # the page's form: no token, so checked by its Origin
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not same_origin(origin, request.headers.get("host"), gate.hosts):
            return error(403, "cross-site request refused")
        gate.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE)
        return response

    return [Route("/login", form), Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]


def build(routes: Sequence[BaseRoute], gate: Gate, station: str, static: str) -> Starlette:
    """An app with ``routes``, its own ``static`` folder at /static, the shared
    one at /common, the login pages, behind the :class:`Guard`."""
    from starlette.middleware import Middleware

    app = Starlette(
        routes=[*login_routes(gate, station), *routes,
                Mount("/static", StaticFiles(directory=static), name="static"),
                Mount("/common", StaticFiles(directory=str(COMMON)), name="common")],
        middleware=[Middleware(Guard, gate=gate)],
    )
    app.state.gate = gate
    return app


def console_hosts(web: Web, listen_host: str | None = None) -> set[str]:
    """The names a console answers to: localhost, the address it listens on,
    ``[web] hosts``, and, listening on every interface, this machine's names
    and addresses."""
    import socket

    hosts = {"localhost", "127.0.0.1", "::1", *(h.lower().strip("[]") for h in web.hosts)}
    host = (listen_host or web.address[0]).lower()
    if host in ("0.0.0.0", "::", ""):
        names = {socket.gethostname(), socket.getfqdn()}
        for name in list(names):
            with contextlib.suppress(OSError):
                names |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
        hosts |= {n.lower() for n in names if n}
    else:
        hosts.add(host)
    return hosts


def page(folder: str, gate: Gate, station: str) -> Handler:
    """The console's one HTML page, with its token and the station's name."""
    from pathlib import Path

    async def serve(request: Request) -> Response:
        html = (Path(folder) / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{token}}", gate.token).replace("{{station}}", station)
                            .replace("{{logout}}", "" if not gate.needs_login else
                                     '<form method="post" action="/logout"><button>Log out</button></form>'))

    return serve


def live_events(request: Request, version: Callable[[], Awaitable[object]], event: str) -> StreamingResponse:
    """Server-sent events: ``event`` whenever ``version()`` changes (looked at
    each :data:`EVENT_POLL` s), a keep-alive comment in the quiet, until the page goes."""
    import json
    import time

    async def stream() -> AsyncIterator[str]:
        seen: object = None
        quiet = 0.0
        while not await request.is_disconnected():
            now = await version()
            if now != seen:
                seen, quiet = now, 0.0
                yield f"event: {event}\ndata: {json.dumps({'at': time.time()})}\n\n"
            elif quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(EVENT_POLL)
            quiet += EVENT_POLL

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def serve_alone(web: Web, listen: str | None, make_app: Callable[[], ASGIApp], what: str) -> None:
    """A console on its own (``relay ground web``, ``relay edge web``) until SIGINT or SIGTERM."""
    host, port = check_listen(web, listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(f"{what}: http://{host}:{port}/", flush=True)
    asyncio.run(serve(make_app(), host, port, in_daemon=False))


def check_listen(web: Web, listen: str | None, key: str = "web.listen") -> tuple[str, int]:
    """Where to serve: ``listen`` (or ``[web] listen``); beyond loopback only with a login."""
    from relay.config import ConfigError

    try:
        web = web.model_copy(update={"listen": type(web).check_listen(listen)}) if listen else web
    except ValueError as exc:
        raise ConfigError(f"--listen {listen}: {exc}") from None
    host, port = web.address
    if not is_loopback(host) and web.password_hash is None:
        raise ConfigError(f"{key} {web.listen}: beyond loopback the console needs a login: set web.password_hash "
                          "(`relay web password` makes one), or reach 127.0.0.1 through an SSH tunnel")
    return host, port


async def serve(app: ASGIApp, host: str, port: int, *, in_daemon: bool = True) -> None:
    """Serve ``app`` in the running event loop until cancelled (a daemon's job)
    or, alone (``in_daemon=False``), until SIGINT or SIGTERM."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # in the daemon, the daemon owns the signals
            if in_daemon:
                yield
            else:
                with super().capture_signals():
                    yield

    gate = getattr(getattr(app, "state", None), "gate", None)
    if isinstance(gate, Gate) and host.lower() not in ("0.0.0.0", "::"):
        gate.hosts.add(host.lower())  # the address given on the command line, if it differs from the file's
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                   lifespan="off"))
    log.info("console on http://%s:%d/", host, port)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.shield(task)
    except SystemExit:  # uvicorn's answer to an address it cannot bind
        raise RelayError(f"the console cannot listen on {host}:{port} (in use, or not this machine's)") from None
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
