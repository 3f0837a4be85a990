"""The station console at the edge: a page to listen to, read and search
what the station received.

A Starlette app over the edge's own stores: the inbox (what was received,
played, quarantined), the transcript index (:mod:`edge.search`) and the same
:class:`edge.player.Player` the daemon speaks with, so a bundle sounds in the
browser as on the station's speakers. Audio is rendered on first request
into a cache beside the store (``state_dir/web``) and served with byte
ranges (the browser seeks in it); subtitles come from the word timings
(:mod:`edge.subtitles`). The list updates itself over server-sent events.

Every asset is in the package: the station is offline. The login, the
guard against cross-site requests (the one action here, play on the
station's speakers, needs the page's token) and the address check are
:mod:`relay.web`'s, shared with the ground's console.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge.search import SearchError, TranscriptIndex
from edge.store import ACCEPTED, QUARANTINED, Inbox, Stored
from edge.subtitles import FORMATS, render, speaker_name
from edge.web.growing import GrowingWav, byte_range
from relay.config import EdgeConfig
from relay.errors import RelayError
from relay.format.bundle import Bundle
from relay.web.auth import Gate
from relay.web.server import (
    NotFound,
    Refused,
    build,
    check_listen,
    console_hosts,
    console_pool,
    error,
    guarded,
    live_events,
    lower_priority,
    page,
    serve,
)

log = logging.getLogger("relay.edge.web")
STATIC = resources.files("edge.web") / "static"
# one colour per speaker, in order: distinct, readable on white, and not told apart by hue alone
PALETTE = ("#1f5fa8", "#b3431b", "#2e7d32", "#7b3fa0", "#8a6d00", "#00796b", "#ad1457", "#455a64")
MEDIA = {"txt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8", "srt": "application/x-subrip"}


LIVE_FOR = 120.0  # seconds after a stream's newest part during which it counts as live (unless it ended)
T = TypeVar("T")


@dataclass(frozen=True)
class StreamView:
    """A live stream's parts received so far, shown as one item (ids ``s-<stream id>``)."""

    stream_id: bytes
    parts: list[Stored]

    @property
    def key(self) -> str:
        return f"s-{self.stream_id.hex()}"

    @property
    def ended(self) -> bool:
        return any(p.stream is not None and p.stream.last for p in self.parts)

    def state(self, now: float | None = None) -> str:
        if self.ended:
            return "ended"
        return "live" if (now or time.time()) - max(p.received for p in self.parts) < LIVE_FOR else "stopped"


Entry = Stored | StreamView


def key(item: Entry) -> str:
    """What the page calls it: a bundle's hex id, or a stream's ``s-<id>``."""
    return item.key if isinstance(item, StreamView) else item.bundle_id.hex()


@dataclass
class Console:
    """What the app's handlers share: the stores, a renderer, and the console's
    own worker threads (never the daemon's: a rendering waiting for its turn
    must not keep a flash bundle from being decoded or played)."""

    cfg: EdgeConfig
    inbox: Inbox
    index: TranscriptIndex
    _player: Any = None
    _render_lock: threading.RLock = field(default_factory=threading.RLock)
    _summaries: dict[bytes, dict] = field(default_factory=dict)
    _growing: dict[bytes, GrowingWav] = field(default_factory=dict)  # renderings under way
    _reading: set[bytes] = field(default_factory=set)  # bundles whose speakers the background reader is to read
    _reader_inbox: Inbox | None = None
    pool: ThreadPoolExecutor = field(default_factory=console_pool)

    async def off(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the console's own worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, partial(fn, *args))

    @property
    def cache(self) -> Path:
        return self.cfg.edge.state_dir / "web"

    def player(self):
        if self._player is None:
            from edge.player import Player

            self._player = Player(self.cfg)
        return self._player

    def stored(self, key: str) -> Entry:
        """A received bundle by its full id, or a stream by ``s-<id>``; :class:`NotFound` otherwise."""
        if key.startswith("s-"):
            try:
                sid = bytes.fromhex(key[2:])
            except ValueError:
                raise NotFound(f"{key!r} is not a stream id") from None
            parts = self.inbox.stream(sid)
            if not parts:
                raise NotFound(f"no stream {key} on this station")
            return StreamView(sid, parts)
        try:
            bid = bytes.fromhex(key)
        except ValueError:
            raise NotFound(f"{key!r} is not a bundle id") from None
        item = self.inbox.get(bid) if len(bid) == 8 else None
        if item is None:
            raise NotFound(f"no bundle {key} on this station")
        return item

    def entries(self) -> list[Entry]:
        """What the list shows, newest first: each bundle, and each stream once (its newest part's place)."""
        items = sorted(self.inbox.bundles(), key=lambda s: s.received, reverse=True)
        parts: dict[bytes, list[Stored]] = {}
        for item in items:
            if item.stream is not None:
                parts.setdefault(item.stream.stream_id, []).append(item)
        out: list[Entry] = []
        for item in items:
            if item.stream is None:
                out.append(item)
            elif item is parts[item.stream.stream_id][0]:  # the stream's newest part
                ordered = sorted(parts[item.stream.stream_id], key=lambda p: p.stream.seq if p.stream else 0)
                out.append(StreamView(item.stream.stream_id, ordered))
        return out

    def bundle(self, item: Entry) -> Bundle:
        """The bundle to show and speak: a stream's parts joined on the timeline they play on, back to back."""
        if isinstance(item, StreamView):
            return join_parts([self.bundle(p) for p in item.parts if p.state in (ACCEPTED, QUARANTINED)],
                              item.parts[0].title or "live")
        return self.bundle_in(item, self.inbox)

    def bundle_in(self, item: Stored, inbox: Inbox) -> Bundle:
        from relay.format.wire import decode_bundle

        if item.state not in (ACCEPTED, QUARANTINED):
            raise NotFound(f"bundle {item.bundle_id.hex()} was rejected ({item.reason}): nothing to show")
        return decode_bundle(inbox.data(item.bundle_id), f"bundle {item.bundle_id.hex()}", self.cfg.limits)

    def summary(self, item: Entry) -> dict:
        """A row of the list (a bundle's speakers read from it once: bundles never change)."""
        if isinstance(item, StreamView):
            rows = [self.summary(p) for p in item.parts]
            return {"id": item.key, "title": item.parts[0].title or "live", "received": item.parts[-1].received,
                    "duration": sum(p.duration or 0.0 for p in item.parts), "priority": rows[-1]["priority"],
                    "state": item.state(), "reason": None, "plays": min(p.plays for p in item.parts),
                    "speakers": None if any(r["speakers"] is None for r in rows) else  # a part still being read
                    list(dict.fromkeys(name for r in rows for name in r["speakers"])),
                    "parts": len(item.parts)}
        speakers = self._speakers(item)
        state = {ACCEPTED: "played" if item.played else "stored"}.get(item.state, item.state)
        return {"id": item.bundle_id.hex(), "title": item.title or "untitled", "received": item.received,
                "duration": item.duration,
                "priority": item.priority.name.lower() if item.priority is not None else None,
                "state": state, "reason": item.reason, "plays": item.plays, "speakers": speakers}

    def _speakers(self, item: Stored) -> list[str] | None:
        """Who speaks in it, from the transcript index (bundles never change); None
        while a bundle not indexed yet is read in the background: a console started
        over a year of bundles lists them at once instead of decoding every one first."""
        if item.bundle_id in self._summaries:
            return self._summaries[item.bundle_id]["speakers"]
        if item.state not in (ACCEPTED, QUARANTINED):
            self._summaries[item.bundle_id] = {"speakers": []}
            return []
        found = self.index.speakers(item.bundle_id)
        if found is not None:
            self._summaries[item.bundle_id] = {"speakers": found}
            return found
        with self._render_lock:
            if not self._reading:
                threading.Thread(target=self._read_speakers, name="console-index", daemon=True).start()
            self._reading.add(item.bundle_id)
        return None

    def _read_speakers(self) -> None:
        """In the background, at low priority: each bundle asked about decoded once and indexed
        (on its own connection), so the list has its speakers, and search has its words."""
        lower_priority()
        index = TranscriptIndex(self.cfg.edge.transcripts_db, self.cfg.limits)
        try:
            while True:
                with self._render_lock:
                    if not self._reading:
                        return
                    bid = next(iter(self._reading))
                item = self.inbox_for_reading().get(bid)
                speakers: list[str] = []
                if item is not None:
                    try:
                        b = self.bundle_in(item, self.inbox_for_reading())
                        index.add(b)
                        speakers = [speaker_name(b, i) for i in range(len(b.speakers))]
                    except RelayError:  # one that no longer decodes is listed without its speakers
                        speakers = []
                    except Exception as exc:  # noqa: BLE001 - the list must not wait on one bundle for ever
                        log.error("reading bundle %s for the list failed: %s: %s", bid.hex(),
                                  exc.__class__.__name__, exc)
                self._summaries[bid] = {"speakers": speakers}
                with self._render_lock:
                    self._reading.discard(bid)
        finally:
            index.close()

    def inbox_for_reading(self) -> Inbox:
        """The background reader's own store connection (SQLite connections are one thread's)."""
        if self._reader_inbox is None:
            self._reader_inbox = Inbox.of(self.cfg)
        return self._reader_inbox

    def audio(self, item: Entry) -> Path:
        """The bundle spoken into a WAV on its original timeline, whole (rendered
        once, in a worker thread); a stream's parts each rendered and joined."""
        if isinstance(item, StreamView):
            parts = [self.audio(p) for p in item.parts if p.state in (ACCEPTED, QUARANTINED)]
            path = self.cache / f"{item.key}-{len(parts)}.wav"
            with self._render_lock:
                if not path.is_file():
                    join_wavs(parts, path)
            return path
        got = self.render(item)
        if isinstance(got, Path):
            return got
        got.wait_for(got.size, timeout=3600)
        return got.path

    def render(self, item: Stored) -> GrowingWav | Path:
        """The bundle's WAV: the daemon's own (it spoke it into a file), the
        cached file, or the one being rendered now (started here if need be),
        which a response can follow as it grows. One the ``[retention]`` limits
        would not let the daemon write is refused (413)."""
        from edge.player import wav_bytes
        from edge.retention import console_cache
        from relay.retention import unlink

        path = self.cache / f"{item.bundle_id.hex()}.wav"
        spoken = self.inbox.outputs(item.bundle_id, self.cfg.edge.played_dir)
        if spoken is not None:
            return spoken
        with self._render_lock:
            if path.is_file():
                return path
            growing = self._growing.get(item.bundle_id)
            if growing is not None and growing.failed is None:
                return growing
            player = self.player()
            performance = player.prepare(self.bundle(item))
            duration = performance.bundle.source.duration
            size = wav_bytes(duration, performance.rate)
            limit = min(self.cfg.retention.wav_mb, self.cfg.retention.cache_mb) * 1e6
            if size > limit:
                raise Refused(413, f"bundle {item.bundle_id.hex()} would render to {size / 1e6:.0f} MB, over what "
                                   f"this console keeps ({limit / 1e6:.0f} MB: [retention] wav_mb, cache_mb)")
            unlink(console_cache(self.cfg, time.time(), need=size))
            growing = GrowingWav(path, performance.rate, round(duration * performance.rate))
            self._growing[item.bundle_id] = growing

        def work() -> None:
            from edge.playback import play

            lower_priority()
            try:
                with self._render_lock:
                    play(player.phrases(performance), growing, from_start=True, until=duration)
            except Exception as exc:  # the page gets one JSON line; the log names the bundle
                log.error("rendering bundle %s failed: %s: %s", item.bundle_id.hex(), exc.__class__.__name__, exc)
            finally:
                self._growing.pop(item.bundle_id, None)

        threading.Thread(target=work, name=f"render-{item.bundle_id.hex()}", daemon=True).start()
        return growing

    def play_here(self, item: Entry) -> None:
        """On the station's sound card, as the daemon plays (one at a time)."""
        with self._render_lock:
            player = self.player()
            player.to_device(player.prepare(self.bundle(item)))


def join_parts(parts: list[Bundle], title: str) -> Bundle:
    """A stream's parts as one bundle: each part's words moved to where it plays
    (after the parts before it), speakers the same person across parts by name."""
    from relay.format.bundle import Segment, SourceInfo, Speaker, Word

    speakers: list[Speaker] = []
    names: dict[str, int] = {}
    segments: list[Segment] = []
    offset = 0.0
    for b in parts:
        for seg in sorted(b.segments, key=lambda s: s.start):
            name = speaker_name(b, seg.speaker)
            if name not in names:
                names[name] = len(speakers)
                speakers.append(b.speakers[seg.speaker])
            words = tuple(Word(w.text, w.start + offset, w.end + offset) for w in seg.words)
            segments.append(Segment(names[name], seg.start + offset, seg.end + offset, seg.text, words))
        offset += b.source.duration
    language = parts[0].source.language if parts else "en"
    return Bundle(SourceInfo(title, offset, language), speakers, segments)


def join_wavs(paths: list[Path], out: Path) -> None:
    """WAV files one after the other in one file (resampled to the first's rate where they differ)."""
    import numpy as np
    import soundfile as sf
    import soxr

    blocks, rate = [], 0
    for p in paths:
        audio, sr = sf.read(p, dtype="float32", always_2d=False)
        rate = rate or sr
        blocks.append(audio if sr == rate else soxr.resample(audio, sr, rate).astype(np.float32))
    partial = out.with_suffix(".partial.wav")
    sf.write(partial, np.concatenate(blocks) if blocks else np.zeros(0, np.float32), rate or 16000, subtype="PCM_16")
    partial.replace(out)


def create_app(cfg: EdgeConfig) -> Starlette:
    """The console over ``cfg``'s stores."""
    console = Console(cfg, Inbox.of(cfg), TranscriptIndex(cfg.edge.transcripts_db, cfg.limits))
    gate = Gate(cfg.web.password_hash, cfg.web.session_hours * 3600, console_hosts(cfg.web))

    async def bundles(request: Request) -> Response:
        items = console.entries()
        return JSONResponse(await console.off(lambda: [console.summary(s) for s in items]))

    async def events(request: Request) -> Response:
        async def version() -> object:
            return console.inbox.version()

        return live_events(request, version, "bundles")

    async def detail(request: Request) -> Response:
        item = console.stored(request.path_params["id"])
        b = await console.off(console.bundle, item)
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
        got: GrowingWav | Path = await console.off(
            console.audio, item) if isinstance(item, StreamView) else await console.off(console.render, item)
        name = f'inline; filename="{key(item)}.wav"'
        if isinstance(got, Path):
            return FileResponse(got, media_type="audio/wav", headers={"Content-Disposition": name})
        wanted = byte_range(request.headers.get("range"), got.size)
        start, end = wanted or (0, got.size)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start), "Content-Disposition": name,
                   "Cache-Control": "no-store"}
        if wanted:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{got.size}"
        return StreamingResponse(iterate_in_threadpool(got.read(start, end)), status_code=206 if wanted else 200,
                                 media_type="audio/wav", headers=headers)

    async def text(request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in FORMATS:
            return error(404, f"no format {fmt!r} (one of {', '.join(FORMATS)})")
        item = console.stored(request.path_params["id"])
        body = render(await console.off(console.bundle, item), fmt)
        name = f"{key(item)}.{fmt}"
        return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def search(request: Request) -> Response:
        query = request.query_params.get("q", "")[:500]
        await console.off(console.index.sync, console.inbox)
        hits = console.index.search(query, 50)
        return JSONResponse([h.to_dict() for h in hits])

    async def play(request: Request) -> Response:  # the token and Origin are checked by relay.web's Guard
        item = console.stored(request.path_params["id"])
        await console.off(console.play_here, item)
        return JSONResponse({"played": key(item)})

    from edge.playback import PlaybackError

    def api(handler):  # noqa: ANN001, ANN202 - a route's handler, guarded with what this console can raise
        return guarded(handler, [(SearchError, 400), (PlaybackError, 409)])

    routes = [
        Route("/", guarded(page(str(STATIC), gate, cfg.edge.name))),
        Route("/api/bundles", api(bundles)),
        Route("/api/events", api(events)),
        Route("/api/search", api(search)),
        Route("/api/bundles/{id}", api(detail)),
        Route("/api/bundles/{id}/audio.wav", api(audio)),
        Route("/api/bundles/{id}/text.{fmt}", api(text)),
        Route("/api/bundles/{id}/play", api(play), methods=["POST"]),
    ]
    app = build(routes, gate, cfg.edge.name, str(STATIC))
    app.state.console = console
    return app


async def serve_console(cfg: EdgeConfig) -> None:
    """The daemon's job: the console in its event loop (:func:`relay.web.server.serve`)."""
    host, port = check_listen(cfg.web, None)
    await serve(create_app(cfg), host, port)
