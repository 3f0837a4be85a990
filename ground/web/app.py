"""The station console at the ground: the queue, each edge's link, and a
recording dropped on the page queued for an edge.

A Starlette app over the ground's queue (:class:`ground.queue.Outbox`,
its own connection: WAL lets it share the file with the daemon). What it
shows is :mod:`ground.status`'s reading, the same as ``relay ground
status``; what it changes goes through the same calls as ``relay ground
queue``. An upload is streamed to ``state_dir/uploads`` under a size limit
(``[web] max_upload_mb``), checked exactly as a file queued from the shell
(:mod:`ground.intake`), and removed again if it is refused. The login, the
cross-site guard and the serving are :mod:`relay.web`'s.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ground.fleet import members
from ground.intake import check_file, destination, enqueue
from ground.queue import Outbox, OutboxError
from ground.status import edges, entries, fleet
from relay.config import GroundConfig
from relay.errors import RelayError
from relay.link.messages import Priority
from relay.storage import is_full
from relay.web.auth import Gate
from relay.web.server import (
    NotFound,
    Refused,
    build,
    check_listen,
    console_hosts,
    console_pool,
    guarded,
    live_events,
    page,
    serve,
)

log = logging.getLogger("relay.ground.web")
T = TypeVar("T")
STATIC = resources.files("ground.web") / "static"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
FINISHED_SHOWN = 20  # the most recent finished entries the page lists (relay ground queue ls --all lists every one)
MIN_FREE = 64 * 1024 * 1024  # bytes an upload must leave on the disk (the queue and the daemon need room)


def upload_name(name: str) -> str:
    """A client's file name made safe to keep: no folders, no odd characters
    (what it holds is checked once it is here: audio must decode)."""
    base = SAFE_NAME.sub("_", Path(name.replace("\\", "/")).name).strip("._")[-80:]
    if not base:
        raise Refused(400, "the upload has no file name (?name=)")
    return base


async def receive_upload(request: Request, folder: Path, name: str, limit: int) -> Path:
    """The request's body streamed into ``folder`` under ``limit`` bytes; one
    :class:`Refused` (and nothing left behind) for a body too large, a full
    disk or a client that went away."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"the file is larger than this console takes ({limit // 2**20} MB: [web] max_upload_mb)")
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(folder).free < int(declared or 0) + MIN_FREE:
        raise Refused(507, f"no room for it on the ground ({folder})")
    path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**6:06d}-{name}"
    partial = path.with_name(path.name + ".part")
    size = 0
    try:
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"the file is larger than this console takes ({limit // 2**20} MB)")
                out.write(chunk)
        if size == 0:
            raise Refused(400, "the file is empty")
        partial.replace(path)
    except OSError as exc:
        raise Refused(507, "no room for it on the ground" if is_full(exc) else f"cannot store it: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return path


def create_app(cfg: GroundConfig) -> Starlette:
    """The console over ``cfg``'s queue."""
    outbox = Outbox(cfg.ground.queue_db, cfg.limits)
    lock = asyncio.Lock()  # one connection, used by one request at a time
    pool = console_pool()  # checks of uploads, in the console's own threads
    gate = Gate(cfg.web.password_hash, cfg.web.session_hours * 3600, console_hosts(cfg.web))
    uploads = cfg.ground.state_dir / "uploads"

    async def locked(fn: Callable[[], T]) -> T:
        async with lock:
            return fn()

    def group_members() -> dict[str, list[str]]:
        out = {}
        for g in cfg.groups:
            try:
                out[g] = members(cfg, g)
            except RelayError:
                out[g] = []  # a group the daemon would refuse: not offered
        return out

    async def get_queue(request: Request) -> Response:
        rows = await locked(lambda: entries(outbox, cfg, active_only=False, finished=FINISHED_SHOWN))
        return JSONResponse({"active": [r.to_dict() for r in rows if r.entry.active],
                             "finished": [r.to_dict() for r in rows if not r.entry.active]})

    async def get_status(request: Request) -> Response:
        link = await locked(outbox.link)
        rows = await locked(lambda: [e.to_dict() for e in edges(outbox, cfg)])
        sent_to_many = await locked(lambda: fleet(outbox, cfg))
        return JSONResponse({
            "station": cfg.ground.name, "edges": rows, "default_edge": cfg.ground.default_edge,
            "groups": group_members(), "fleet": sent_to_many,
            "daemon": None if link is None else {"connected": link.connected, "since": link.since,
                                                 "alive": link.alive(), "beat": link.beat, "stopped": link.stopped,
                                                 "line": link.describe()},
            "max_upload": int(cfg.web.max_upload_mb * 2**20),
        })

    async def events(request: Request) -> Response:
        return live_events(request, lambda: locked(outbox.version), "queue")

    async def upload(request: Request) -> Response:
        q = request.query_params
        name = upload_name(q.get("name", ""))
        to = destination(cfg, q.get("to") or None, "to")
        priority = Priority.parse(q.get("priority", "normal"))
        title = q.get("title", "").strip()[:200] or Path(name).stem
        path = await receive_upload(request, uploads, name, int(cfg.web.max_upload_mb * 2**20))
        try:
            # the audio's first frames, or the whole bundle, decoded off the event loop and outside the
            # queue's lock: the page goes on answering meanwhile
            checked = await asyncio.get_running_loop().run_in_executor(pool, check_file, cfg, path)
            row = await locked(lambda: enqueue(outbox, checked, to, priority, title))
        except RelayError as exc:  # named as the operator knows it, not by where it was kept
            path.unlink(missing_ok=True)
            raise RelayError(str(exc).replace(str(path), name)) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if path.suffix.lower() == ".bundle":  # the queue holds the bundle itself; audio waits to be encoded
            path.unlink(missing_ok=True)
        found = await locked(lambda: outbox.entry(row))
        log.info("console: queued upload %s as entry %d for %s (%s)", name, row, ", ".join(to),
                 priority.name.lower())
        return JSONResponse({**found.to_dict(), "rows": [i.to_dict() for i in found.edges]}, status_code=201)

    async def entry(request: Request) -> tuple[int, str | None]:
        """The entry the path names and the edge the query may name, or :class:`NotFound` (404, not a conflict)."""
        row = int(request.path_params["id"])
        if not 1 <= row < 2**63:  # beyond SQLite's integers: no such entry, not a crash
            raise NotFound(f"no queue entry {row}")
        edge = request.query_params.get("edge") or None
        try:
            found = await locked(lambda: outbox.entry(row))
        except OutboxError as exc:
            raise NotFound(str(exc)) from None
        if edge is not None and edge not in {i.edge for i in found.edges}:
            raise NotFound(f"entry {row} does not go to {edge[:40]!r}")
        return row, edge

    async def cancel(request: Request) -> Response:
        row, edge = await entry(request)
        return JSONResponse([i.to_dict() for i in await locked(lambda: outbox.cancel_entry(row, edge))])

    async def bump(request: Request) -> Response:
        row, edge = await entry(request)
        prio = request.query_params.get("priority")
        to = Priority.parse(prio) if prio else None
        return JSONResponse([i.to_dict() for i in await locked(lambda: outbox.bump_entry(row, edge, to))])

    def api(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        return guarded(handler, [(OutboxError, 409)])

    routes = [
        Route("/", guarded(page(str(STATIC), gate, cfg.ground.name))),
        Route("/api/queue", api(get_queue)),
        Route("/api/queue", api(upload), methods=["POST"]),
        Route("/api/status", api(get_status)),
        Route("/api/events", api(events)),
        Route("/api/queue/{id:int}/cancel", api(cancel), methods=["POST"]),
        Route("/api/queue/{id:int}/bump", api(bump), methods=["POST"]),
    ]
    app = build(routes, gate, cfg.ground.name, str(STATIC))
    app.state.outbox = outbox
    return app


async def serve_console(cfg: GroundConfig) -> None:
    """The daemon's job: the console in its event loop (:func:`relay.web.server.serve`)."""
    host, port = check_listen(cfg.web, None)
    await serve(create_app(cfg), host, port)
