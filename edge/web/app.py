"""The station console at the edge: a page to listen to, read and search
what the station received (issue 15).

A Starlette app over the edge's own stores: the inbox (what was received,
played, quarantined), the transcript index (:mod:`edge.search`) and the same
:class:`edge.player.Player` the daemon speaks with, so a bundle sounds in the
browser as on the station's speakers. Audio is rendered on first request
into a cache beside the store (``state_dir/web``) and served with byte
ranges (the browser seeks in it); subtitles come from the word timings
(:mod:`edge.subtitles`). The list updates itself over server-sent events.

Every asset is in the package: the station is offline. Bound to loopback by
default; any other address is refused until the console has a login. The
one action that changes anything here (play on the station's speakers) needs
the page's token in a header, which a page on another site cannot send
without this server agreeing to it (it never does: no CORS), and an Origin,
when the browser sends one, that is this server.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.search import SearchError, TranscriptIndex
from edge.subtitles import FORMATS, render, speaker_name
from relay.config import EdgeConfig
from relay.errors import RelayError
from relay.format.bundle import Bundle
from relay.link.inbox import ACCEPTED, QUARANTINED, Inbox, Stored

log = logging.getLogger("relay.edge.web")
STATIC = resources.files("edge.web") / "static"
TOKEN_HEADER = "X-Relay-Token"
EVENT_POLL = 1.0  # seconds between looks at the store for the live list
KEEPALIVE = 15.0
# one colour per speaker, in order: distinct, readable on white, and not told apart by hue alone
PALETTE = ("#1f5fa8", "#b3431b", "#2e7d32", "#7b3fa0", "#8a6d00", "#00796b", "#ad1457", "#455a64")
MEDIA = {"txt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip"}


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class Console:
    """What the app's handlers share: the stores, a renderer, the page's token."""

    cfg: EdgeConfig
    inbox: Inbox
    index: TranscriptIndex
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _player: Any = None
    _render_lock: threading.Lock = field(default_factory=threading.Lock)
    _summaries: dict[bytes, dict] = field(default_factory=dict)

    @property
    def cache(self) -> Path:
        return self.cfg.edge.state_dir / "web"

    def player(self):
        if self._player is None:
            from edge.player import Player

            self._player = Player(self.cfg)
        return self._player

    def stored(self, hex_id: str) -> Stored:
        """A received bundle by its full id, or :class:`NotFound`."""
        try:
            bid = bytes.fromhex(hex_id)
        except ValueError:
            raise NotFound(f"{hex_id!r} is not a bundle id") from None
        item = self.inbox.get(bid) if len(bid) == 8 else None
        if item is None:
            raise NotFound(f"no bundle {hex_id} on this station")
        return item

    def bundle(self, item: Stored) -> Bundle:
        from relay.format.wire import decode_bundle

        if item.state not in (ACCEPTED, QUARANTINED):
            raise NotFound(f"bundle {item.bundle_id.hex()} was rejected ({item.reason}): nothing to show")
        return decode_bundle(self.inbox.data(item.bundle_id), f"bundle {item.bundle_id.hex()}", self.cfg.limits)

    def summary(self, item: Stored) -> dict:
        """A row of the list (speakers read from the bundle once; bundles never change)."""
        if item.bundle_id not in self._summaries:
            speakers: list[str] = []
            if item.state in (ACCEPTED, QUARANTINED):
                try:
                    b = self.bundle(item)
                    speakers = [speaker_name(b, i) for i in range(len(b.speakers))]
                except RelayError:  # one that no longer decodes is listed without its speakers
                    speakers = []
            self._summaries[item.bundle_id] = {"speakers": speakers}
        state = {ACCEPTED: "played" if item.played else "stored"}.get(item.state, item.state)
        return {"id": item.bundle_id.hex(), "title": item.title or "untitled", "received": item.received,
                "duration": item.duration, "priority": item.priority.name.lower() if item.priority else None,
                "state": state, "reason": item.reason, "plays": item.plays, **self._summaries[item.bundle_id]}

    def audio(self, item: Stored) -> Path:
        """The bundle spoken into a WAV on its original timeline, rendered once (in a worker thread)."""
        path = self.cache / f"{item.bundle_id.hex()}.wav"
        with self._render_lock:
            if not path.is_file():
                player = self.player()
                self.cache.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial.wav")
                player.to_file(player.prepare(self.bundle(item)), partial)
                partial.replace(path)
        return path

    def play_here(self, item: Stored) -> None:
        """On the station's sound card, as the daemon plays (one at a time)."""
        with self._render_lock:
            player = self.player()
            player.to_device(player.prepare(self.bundle(item)))


class NotFound(RelayError):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(cfg: EdgeConfig) -> Starlette:
    """The console over ``cfg``'s stores."""
    console = Console(cfg, Inbox.of(cfg), TranscriptIndex(cfg.edge.transcripts_db, cfg.limits))

    async def page(request: Request) -> Response:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{token}}", console.token).replace("{{station}}", cfg.edge.name))

    async def bundles(request: Request) -> Response:
        items = sorted(console.inbox.bundles(), key=lambda s: s.received, reverse=True)
        return JSONResponse(await asyncio.to_thread(lambda: [console.summary(s) for s in items]))

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seen, quiet = None, 0.0
            while not await request.is_disconnected():
                now = console.inbox.version()
                if now != seen:
                    seen, quiet = now, 0.0
                    yield f"event: bundles\ndata: {json.dumps({'count': now[0]})}\n\n"
                elif quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(EVENT_POLL)
                quiet += EVENT_POLL

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def detail(request: Request) -> Response:
        item = console.stored(request.path_params["id"])
        b = await asyncio.to_thread(console.bundle, item)
        return JSONResponse({
            **console.summary(item),
            "speakers": [{"name": speaker_name(b, i), "colour": PALETTE[i % len(PALETTE)]}
                         for i in range(len(b.speakers))],
            "segments": [{"speaker": s.speaker, "start": s.start, "end": s.end,
                          "words": [[w.text, w.start, w.end] for w in s.words] or [[s.text, s.start, s.end]]}
                         for s in sorted(b.segments, key=lambda s: s.start)],
        })

    async def audio(request: Request) -> Response:
        item = console.stored(request.path_params["id"])
        path = await asyncio.to_thread(console.audio, item)
        return FileResponse(path, media_type="audio/wav", filename=f"{item.bundle_id.hex()}.wav",
                            content_disposition_type="inline")

    async def text(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in FORMATS:
            return _error(404, f"no format {fmt!r} (one of {', '.join(FORMATS)})")
        item = console.stored(request.path_params["id"])
        body = render(await asyncio.to_thread(console.bundle, item), fmt)
        name = f"{item.bundle_id.hex()}.{fmt}"
        return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")[:500]
        await asyncio.to_thread(console.index.sync, console.inbox)
        hits = console.index.search(query, 50)
        return JSONResponse([h.to_dict() for h in hits])

    async def play(request: Request) -> Response:
        if request.headers.get(TOKEN_HEADER) != console.token:
            return _error(403, "this action needs the page's token (reload the page)")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _error(403, "cross-site request refused")
        item = console.stored(request.path_params["id"])
        await asyncio.to_thread(console.play_here, item)
        return JSONResponse({"played": item.bundle_id.hex()})

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Every failure one JSON error: what the request asked for wrongly (4xx),
        or a bug (500, logged in one line); never a traceback page."""
        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            from edge.playback import PlaybackError

            try:
                return await handler(request)
            except NotFound as exc:
                return _error(404, str(exc))
            except SearchError as exc:
                return _error(400, str(exc))
            except PlaybackError as exc:
                return _error(409, f"no sound on this station: {exc}")
            except RelayError as exc:
                return _error(422, str(exc))
            except Exception as exc:
                log.error("console request %s failed: %s: %s", request.url.path, exc.__class__.__name__, exc)
                return _error(500, f"{exc.__class__.__name__}: {exc}")

        return run

    routes = [
        Route("/", guarded(page)),
        Route("/api/bundles", guarded(bundles)),
        Route("/api/events", guarded(events)),
        Route("/api/search", guarded(search)),
        Route("/api/bundles/{id}", guarded(detail)),
        Route("/api/bundles/{id}/audio.wav", guarded(audio)),
        Route("/api/bundles/{id}/text.{fmt}", guarded(text)),
        Route("/api/bundles/{id}/play", guarded(play), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.console = console
    return app


def check_listen(cfg: EdgeConfig, listen: str | None = None) -> tuple[str, int]:
    """Where to serve: ``listen`` (or ``[web] listen``), loopback only for now."""
    from relay.config import ConfigError, Web

    try:
        web = Web(enabled=True, listen=listen) if listen else cfg.web
    except ValueError as exc:
        raise ConfigError(f"--listen {listen}: not HOST:PORT") from exc
    host, port = web.address
    if not is_loopback(host):
        raise ConfigError(f"web.listen {web.listen}: the console has no login yet, so it is served on loopback only "
                          "(127.0.0.1); reach it through an SSH tunnel")
    return host, port


async def serve_console(cfg: EdgeConfig, listen: str | None = None, *, in_daemon: bool = True) -> None:
    """Serve the console in the running event loop until cancelled (the daemon's
    job) or, alone (``in_daemon=False``), until SIGINT or SIGTERM."""
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # in the daemon, the daemon owns the signals
            if in_daemon:
                yield
            else:
                with super().capture_signals():
                    yield

    host, port = check_listen(cfg, listen)
    server = Server(uvicorn.Config(create_app(cfg), host=host, port=port, log_level="warning", access_log=False,
                                   lifespan="off"))
    log.info("station console on http://%s:%d/", host, port)
    task = asyncio.create_task(server.serve())
    try:
        await asyncio.shield(task)
    except SystemExit:  # uvicorn's answer to an address it cannot bind
        raise RelayError(f"the console cannot listen on {host}:{port} (in use, or not this machine's)") from None
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
