"""The ground daemon: spool folder and operator queue in, signed fragments out.

Three tasks share one asyncio loop:

* the spool watcher queues every file that lands in ``spool_dir`` (audio is
  encoded, a ``.bundle`` goes straight out) once it has stopped growing; a
  file that is neither, or a bundle an edge would refuse, is moved to
  ``spool_dir/.rejected`` with a ``.reason`` file beside it;
* the encoder takes queued audio, most urgent first, and runs the ground
  pipeline (Whisper, diarization, profiles) in a worker thread;
* the link session (one MQTT connection, re-established after any drop)
  publishes one message at a time, always the most urgent (a fragment, or
  an overdue poll), within the bandwidth budget, and applies the acks that
  come back, each verified against the sending edge's own key. An ack that
  is malformed, unsigned, forged, from an edge this ground does not serve
  or for a bundle it does not know is counted, logged (one line per kind,
  then a summary a minute) and dropped; nothing an edge or a stranger sends
  stops the daemon.

All state is in the outbox (:mod:`ground.queue`); the daemon holds nothing
that a kill -9 could lose, and a full disk is waited out (one log line), not
turned into failed entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import aiomqtt

from ground.encoder import Encoder
from ground.queue import DurableOutbox, Outbox, State
from ground.retention import prune
from relay.config import ConfigError, GroundConfig
from relay.errors import RelayError
from relay.link.budget import Budget
from relay.link.messages import Ack, LinkError, topics
from relay.link.mqtt import ConnectionSettings, ack, reconnecting
from relay.link.service import Drops, supervise
from relay.link.signing import SigningKey, VerifyKey
from relay.profiles import ProfileStore
from relay.retention import Pruner
from relay.storage import Waiter, persist, persist_blocking

if TYPE_CHECKING:
    from ground.intake import Checked
    from relay.format.bundle import Bundle

log = logging.getLogger("relay.ground")
HEARTBEAT = 30.0  # seconds between the daemon's notes that it is alive (LinkState.alive allows three)


def _names(edges: list[str], most: int = 5) -> str:
    """Edges for a log line: a fleet of forty is not forty names."""
    return ", ".join(edges) if len(edges) <= most else f"{', '.join(edges[:most])} and {len(edges) - most} more"


def _no_words(bundle: Bundle) -> str:
    """A warning for the log when a recording held nothing to say (it still goes: the edge learns so)."""
    if bundle.segments or bundle.clips:
        return ""
    return f"; no speech was found in its {bundle.source.duration:.0f} s: the edge will have nothing to play"


def edge_keys(config: GroundConfig) -> dict[str, VerifyKey]:
    """The public key of every edge this ground serves (``[edges.<name>] key``)."""
    if not config.edges:
        raise ConfigError("edges: no edge configured (add [edges.<name>] with key = the edge's public key)")
    if config.ground.default_edge and config.ground.default_edge not in config.edges:
        raise ConfigError(f"ground.default_edge: {config.ground.default_edge!r} is not one of the [edges]")
    return {name: VerifyKey.parse(e.key, f"edges.{name}.key") for name, e in config.edges.items()}


class GroundDaemon:
    def __init__(self, config: GroundConfig) -> None:
        self.cfg = config
        g = config.ground
        if g.spool_dir is not None and g.spool_dir.exists() and not g.spool_dir.is_dir():
            raise ConfigError(f"ground.spool_dir: {g.spool_dir} is not a folder")
        self.edge_keys = edge_keys(config)
        from ground.fleet import check_groups

        for group in check_groups(config):  # a group naming an unknown edge or itself stops the daemon here
            log.warning("groups.%s has no edges: sending to @%s is refused", group, group)
        self.key = SigningKey.load(g.signing_key)
        self.connection = ConnectionSettings(config.broker, config.username)
        self.state = Waiter(log, f"ground state ({g.state_dir})", where=g.state_dir)
        self.state.on_full = self._prune
        self.outbox = persist_blocking(lambda: Outbox(g.queue_db, config.limits), self.state)
        self.queue = DurableOutbox(self.outbox, self.state)  # what the daemon writes waits out a full disk
        self.profiles = persist_blocking(lambda: ProfileStore(g.profiles_db), self.state)
        self.encoder = Encoder(config)  # models load when the first recording comes
        # each edge's thin link is its own: its own fragment size, rate and windows ([edges.<name>] over [link])
        self.links = {name: config.link_for(name) for name in self.edge_keys}
        self.budgets = {name: Budget(link.rate, link.parsed_windows(), burst=link.fragment_size + link.overhead)
                        for name, link in self.links.items()}
        self.served: dict[str, float] = dict.fromkeys(self.edge_keys, 0.0)  # when each edge was last sent to
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.drops = Drops(log)
        self.pruner = Pruner(partial(prune, config), log)
        self.connected = False
        if config.web.enabled:  # an address it may not serve on stops the daemon now, in one line
            from relay.web.server import check_listen

            check_listen(config.web, None)

    @property
    def edges(self) -> list[str]:
        return list(self.edge_keys)

    # --- main ------------------------------------------------------------------------------------

    async def run(self) -> None:
        requeued = await self.queue.recover()
        if requeued:
            log.info("%d entr%s interrupted while encoding, queued again", requeued, "y" if requeued == 1 else "ies")
        ident = f"relay-ground-{self.cfg.ground.name}"
        jobs = {"encoder": self._encoder(), "heartbeat": self._heartbeat(), "housekeeping": self._housekeeping(),
                "link": reconnecting(self._session, self.connection, ident, self.stop, manual_ack=True)}
        if self.cfg.web.enabled:
            from ground.web.app import serve_console

            jobs["console"] = serve_console(self.cfg)
        if self.cfg.ground.spool_dir is not None:
            jobs["spool"] = self._spool()
        if self.cfg.ground.fit_voices and self.cfg.ground.diarize:
            jobs["voice fitting"] = self._fit_voices()
        try:
            await supervise(self.stop, jobs)
        finally:
            if self.stop.is_set():  # stopped on purpose: the consoles say so at once, not "reconnecting"
                with contextlib.suppress(Exception):
                    self.outbox.set_link(False, stopped=True)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (new work, an ack) or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        self.wake.clear()

    # --- the link --------------------------------------------------------------------------------

    async def _session(self, client: aiomqtt.Client) -> None:
        prefix = self.cfg.broker.topic_prefix
        await client.subscribe(f"{prefix}/+/a", qos=1)
        # what was in flight when the link dropped may be lost: ask at once about the urgent bundles
        await self.queue.poll_urgent_now(self.edges)
        self.connected = True
        await self.queue.set_link(True)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client))
                tg.create_task(self._send(client))
        finally:
            self.connected = False
            with contextlib.suppress(Exception):  # a full disk must not hide why the session ended
                self.outbox.set_link(False)

    async def _heartbeat(self) -> None:
        """The link's state in the queue, refreshed, for the console and `relay ground status`."""
        while True:
            await self.queue.set_link(self.connected)
            await asyncio.sleep(HEARTBEAT)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                await self._on_ack(message)
            except Exception as err:  # a bug met by one message: logged, the message dropped, the ground goes on
                self.drops("error", f"message on {message.topic} could not be handled "
                                    f"({err.__class__.__name__}: {err})")
                log.debug("ack handling failed", exc_info=err)
            ack(client, message)  # applied and committed, or dropped: the broker may forget it

    async def _on_ack(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        parts = topic.split("/")
        edge = parts[-2] if len(parts) >= 3 and parts[-1] == "a" else ""
        key = self.edge_keys.get(edge)
        if key is None:
            self.drops("unknown edge", f"message on {topic}: no edge {edge!r} is served by this ground")
            return
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        try:
            reply = Ack.unpack(payload, key, edge)
        except LinkError as err:
            self.drops(err.reason, f"ack on {topic}: {err}")
            return
        outcome = await self.queue.on_ack(reply, edge, self.cfg.link.ack_timeout, self.cfg.link.max_clock_skew)
        if outcome.item is None:
            self.drops(outcome.refused or "unknown bundle", outcome.note)
            return
        for pid in outcome.delivered_profiles:
            await persist(partial(self.profiles.mark_sent, pid, edge), self.state)
        for pid in reply.missing_profiles:
            await persist(partial(self.profiles.mark_unsent, pid, edge), self.state)
        item = outcome.item
        if outcome.note:
            log.info("%s: entry %d (%s) %s%s", edge, item.id, item.title, outcome.note,
                     f": {item.reason}" if item.reason and item.state == State.FAILED else
                     f": {item.play_reason}" if item.play_reason else "")
        self.wake.set()

    def _open_edges(self) -> tuple[list[str], float]:
        """(the edges whose link may take a message now, the one served least
        recently first; else the seconds until one may)."""
        waits = {name: budget.wait() for name, budget in self.budgets.items()}
        ready = sorted((n for n, w in waits.items() if w <= 0), key=lambda n: self.served[n])
        return ready, min(waits.values(), default=1.0)

    async def _send(self, client: aiomqtt.Client) -> None:
        link, prefix = self.cfg.link, self.cfg.broker.topic_prefix
        sizes = {name: e.fragment_size for name, e in self.links.items()}
        last_prune = time.time()
        while True:
            ready, wait = self._open_edges()
            if not ready:
                await self._sleep(min(max(wait, 0.05), 60.0))
                continue
            out = await self.queue.next_out(sizes, self.key, ready, link.ack_timeout, link.max_poll_interval)
            if out is None:
                # nothing for the edges open now; one that opens later may have work, and new work wakes us
                await self._sleep(1.0 if len(ready) == len(self.budgets) else min(max(wait, 0.05), 1.0))
                continue
            self.budgets[out.edge].spend(len(out.payload) + self.links[out.edge].overhead)
            self.served[out.edge] = time.monotonic()
            await client.publish(topics(prefix, out.edge)[0], out.payload, qos=1)
            await self.queue.sent(out, self.links[out.edge].ack_timeout)
            if time.time() - last_prune > 600:
                await self.queue.prune_log()
                last_prune = time.time()

    # --- encoding --------------------------------------------------------------------------------

    async def _encoder(self) -> None:
        while True:
            item = await self.queue.claim_encoding()
            if item is None:
                await self._sleep(2.0)
                continue
            edges = await asyncio.to_thread(self.outbox.encoding_for, item.entry)
            log.info("encoding entry %d for %s: %s", item.entry, _names(edges), item.source)
            try:
                data, full, decoded = await asyncio.to_thread(self._encode, Path(item.source or ""), item.title,
                                                              edges)
                stored = await self.queue.encoded(item.entry, data, full, decoded)
            except Exception as e:
                kind = self.state.classify(e)
                if kind is not None:  # a cache or the queue filled (or failed): encode it again once it works
                    await self.queue.recover()
                    if kind == "full" and not self.state.pruned:
                        self.state.pruned = True
                        await self._prune()
                    else:
                        await asyncio.sleep(self.state.delay(e, kind))
                    continue
                if not isinstance(e, RelayError):
                    raise
                await self.queue.fail(item.entry, str(e))
                log.warning("entry %d failed: %s", item.entry, e)
                continue
            if stored:
                log.info("entry %d ready: %d bytes%s", item.entry, len(data), _no_words(decoded))
            self.wake.set()

    def _encode(self, path: Path, title: str, edges: list[str]) -> tuple[bytes, list[bytes], Bundle]:
        """In a worker thread: audio file -> (bundle, ids of profiles sent in full, the bundle
        as an edge decodes it: checked here, never on the event loop), once for all of
        ``edges``. New speakers are remembered now, but count as sent to an edge only
        once it acknowledges."""
        from relay.format.wire import decode_bundle

        # fitting follows, in the background
        result = self.encoder.encode_file(path, title, fit_voices=False, edges=edges)
        decoded = decode_bundle(result.data, str(path), self.cfg.limits)
        return result.data, self.encoder.commit(result, sent=False), decoded

    # --- retention -------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """What ``[retention]`` lets go of, every ``retention.every`` seconds."""
        while True:
            await self._prune()
            await asyncio.sleep(self.cfg.retention.every)

    async def _prune(self) -> None:
        """Apply ``[retention]`` (in a worker thread, on its own connections)."""
        await self.pruner()

    # --- voices fitted in the background ---------------------------------------------------------

    async def _fit_voices(self) -> None:
        """Fit a voice to each stored speaker who has none, one at a time, after
        their bundle is queued: a flash bundle never waits for a fit, and the
        speaker's next bundle carries the fitted voice."""
        why = await asyncio.to_thread(self.encoder.fitter.unavailable)
        if why:
            log.warning("voices are not fitted: %s", why)
            return
        while True:
            try:
                done = await asyncio.to_thread(self.encoder.fit_next)
            except Exception as e:
                if not isinstance(e, RelayError | ValueError):
                    raise
                log.warning("voice fitting failed: %s", e)
                await self._sleep(600.0)
                continue
            if done is None:
                await self._sleep(30.0)
                continue
            profile, fit = done
            log.info("fitted voice for %s: %s (CAM++ held out %.2f, best single style %.2f; %.0f s)",
                     profile.name or profile.id_hex, fit.voice.describe(), fit.held_out, fit.stock_held_out,
                     fit.seconds)

    # --- the spool folder ------------------------------------------------------------------------

    async def _spool(self) -> None:
        """Files at the spool's top go to ``default_edge``; files in a folder
        named for an edge, a ``@group`` or ``all`` go there (one entry, encoded
        once). A folder that names nothing this ground serves has its files
        refused, each with its reason beside it in ``.rejected``."""
        spool = self.cfg.ground.spool_dir
        assert spool is not None
        taken = spool / ".taken"
        await persist(lambda: taken.mkdir(parents=True, exist_ok=True), self.state)
        await self._recover_taken(spool)
        while True:
            now = time.time()
            for folder, to in _spool_folders(spool):
                for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                    if not path.is_file() or path.name.startswith("."):
                        continue
                    try:
                        if now - path.stat().st_mtime < self.cfg.ground.spool_settle:
                            continue  # still being written
                        into = taken / to if to else taken
                        into.mkdir(exist_ok=True)
                        dest = into / f"{int(now * 1000)}-{path.name}"
                        os.replace(path, dest)  # same filesystem: atomic
                    except OSError as e:
                        log.warning("spool %s: %s", path.name, e)
                        continue
                    await self._take(spool, dest, to)
            await asyncio.sleep(1.0)

    async def _recover_taken(self, spool: Path) -> None:
        """Files moved out of the spool by a daemon killed before queueing them."""
        known = {i.source for i in self.outbox.items()}
        for folder, to in _spool_folders(spool / ".taken"):
            for path in sorted(folder.iterdir()):
                if path.is_file() and str(path.resolve()) not in known:
                    await self._take(spool, path, to)

    async def _take(self, spool: Path, path: Path, to: str | None) -> None:
        from ground.intake import check_file

        cancel = threading.Event()
        try:
            try:
                checked = await asyncio.to_thread(check_file, self.cfg, path, cancel)  # a bundle is decoded
            except asyncio.CancelledError:
                cancel.set()  # stopping: the worker ends at its next token
                raise
            await persist(lambda: self._queue_file(checked, to), self.state)
        except RelayError as e:
            rejected = spool / ".rejected"
            try:
                rejected.mkdir(exist_ok=True)
                os.replace(path, rejected / path.name)
                (rejected / f"{path.name}.reason").write_text(f"{e}\n")
            except OSError:
                pass
            log.warning("spool %s: %s; moved to %s", path.name, e, rejected)

    def _queue_file(self, checked: Checked, to: str | None) -> None:
        from ground.intake import destination, enqueue

        path = checked.path
        edges = destination(self.cfg, to, "spool folder" if to else "spool")
        title = path.name.split("-", 1)[-1].rsplit(".", 1)[0]
        row = enqueue(self.outbox, checked, edges, title=title)
        log.info("spool: queued %s as entry %d for %s", path.name, row, _names(edges))
        self.wake.set()


def _spool_folders(root: Path) -> list[tuple[Path, str | None]]:
    """``root`` itself (the default edge) and each folder in it not hidden, by the name that says where its files go."""
    out: list[tuple[Path, str | None]] = [(root, None)]
    try:
        out += [(p, p.name) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        pass
    return out
