"""The edge daemon: fragments in, each bundle spoken once, whatever arrives.

One MQTT session (persistent, QoS 1, re-established after any drop)
receives fragments and polls on the edge's data topic and hands them to the
inbox (:mod:`edge.store`), which checks every part against its signed hash
before storing it. A complete transfer is decoded in a worker thread (the
event loop keeps taking messages) and accepted or rejected; acks go back
signed with this edge's key. Decoding runs beside the receiving, never in
its way: a decider task takes complete transfers most urgent first, two at
a time, each in a worker thread under the CPU budget ``[limits]`` gives its
size, so a flash bundle is decoded beside a long bulk one; a third, more
urgent than both, abandons the less urgent (decoded again afterwards).
Every message is acknowledged to the broker
once it is handled, whatever it was: a malformed, forged or oversized one
is counted and logged (one line per kind, then a summary a minute) and
dropped, never redelivered to fail again.

A player task speaks accepted bundles, most urgent first, one at a time, in
a worker thread: on the audio device through ``sounddevice``, or as WAV
files in ``output_dir`` when there is no device or ``play = false``. A bundle
that cannot be played is quarantined with the reason and the player goes on;
each outcome goes back to the ground as a play report. A full disk (state
or output) is waited out with one log line, nothing marked failed for it.
On every (re)connect the edge tells the ground the holes in every transfer
in progress, most urgent first, so a fault costs a flash bundle one round
trip, not a poll timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import partial

import aiomqtt

from edge.player import Player
from edge.retention import NoRoomYet, make_room, prune
from edge.store import ACCEPTED, DurableInbox, Inbox
from relay.config import ConfigError, EdgeConfig
from relay.errors import RelayError
from relay.format.limits import DecodeAbandoned
from relay.link.messages import Ack, LinkError, Poll, Priority, parse_down, topics
from relay.link.mqtt import ConnectionSettings, ack, reconnecting
from relay.link.service import Drops, supervise
from relay.link.signing import SigningKey
from relay.profiles import ProfileStore
from relay.retention import Pruner
from relay.storage import Waiter, persist, persist_blocking

log = logging.getLogger("relay.edge")
MAX_REPLIES = 1000  # acks waiting for the broker; beyond that they are dropped (a poll asks again)
NO_ROOM_RETRY = 60.0  # seconds before a bundle that found no room on the output disk is tried again
DECODERS = 2  # bundles decoded at once: a flash one beside a long one (a third more urgent sets one aside)
HOLE_QUIET = 15.0  # seconds without a message after (re)connecting before holes are reported


@dataclass(order=True)
class _Complete:
    """A complete transfer waiting for its decision (sorted: most urgent, then oldest)."""

    priority: int
    since: float
    bundle_id: bytes = field(compare=False)


class EdgeDaemon:
    def __init__(self, config: EdgeConfig) -> None:
        self.cfg = config
        e = config.edge
        if e.played_dir.exists() and not e.played_dir.is_dir():
            raise ConfigError(f"edge.output_dir: {e.played_dir} is not a folder")
        if not e.trusted_keys:
            raise ConfigError("edge.trusted_keys: required (the public key `relay ground keys init` printed)")
        self.key = SigningKey.load(e.signing_key)
        self.connection = ConnectionSettings(config.broker, config.username)
        self.state = Waiter(log, f"edge state ({e.state_dir})", where=e.state_dir)
        self.output = Waiter(log, f"edge output ({e.played_dir})", where=e.played_dir)
        self.state.on_full = self.output.on_full = self._prune
        self.inbox = persist_blocking(lambda: Inbox.of(config, ProfileStore(e.profiles_db)), self.state)
        self.store = DurableInbox(self.inbox, self.state)  # what the daemon writes waits out a full disk
        self.player = Player(config)
        if config.web.enabled:  # an address it may not serve on stops the daemon now, in one line
            from relay.web.server import check_listen

            check_listen(config.web, None)
        if e.speak:
            self.player.check()
        self.stop = asyncio.Event()
        self.accepted = asyncio.Event()
        self.report = asyncio.Event()  # play reports (or acks) wait to be published
        self.replies: asyncio.Queue[Ack] = asyncio.Queue(MAX_REPLIES)
        self.drops = Drops(log)
        self.pruner = Pruner(partial(prune, config), log)
        self.complete: dict[bytes, _Complete] = {}  # waiting for the decider
        self.heard = time.monotonic()  # when the last message came (holes are reported after a quiet spell)
        self.decide_wake = asyncio.Event()

    async def run(self) -> None:
        e = self.cfg.edge
        await persist(lambda: e.played_dir.mkdir(parents=True, exist_ok=True), self.output)
        for bid, priority in await self.store.complete():  # not decided when the daemon died
            self._completed(bid, priority)
        for item in await self.store.crashed():
            log.error("bundle %s (%s) quarantined: playback did not finish %d times", item.bundle_id.hex(),
                      item.title, self.cfg.link.max_play_attempts)
        ident = f"relay-edge-{e.name}"
        jobs = {"link": reconnecting(self._session, self.connection, ident, self.stop, manual_ack=True),
                "decider": self._decider(), "housekeeping": self._housekeeping()}
        if self.cfg.web.enabled:
            from edge.web.app import serve_console

            jobs["console"] = serve_console(self.cfg)
        if e.speak:
            jobs["player"] = self._player()
        else:
            log.info("speak = false: bundles are stored and acknowledged, not played")
        await supervise(self.stop, jobs)

    # --- the link --------------------------------------------------------------------------------

    async def _session(self, client: aiomqtt.Client) -> None:
        data_topic, ack_topic = topics(self.cfg.broker.topic_prefix, self.cfg.edge.name)
        await client.subscribe(data_topic, qos=1)
        self.report.set()
        self.heard = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            # publishing in its own task: a reply waiting for the broker must not keep the
            # receiving loop from noticing that the link went down (a lost reply is asked for again)
            tasks.create_task(self._publisher(client, ack_topic))
            tasks.create_task(self._report_holes())
            async for message in client.messages:
                self.heard = time.monotonic()
                try:
                    await self._on_message(message)
                except Exception as err:  # a bug met by one message: logged, the message dropped, the edge goes on
                    self.drops("error", f"message on {data_topic} could not be handled "
                                        f"({err.__class__.__name__}: {err})")
                    log.debug("message handling failed", exc_info=err)
                ack(client, message)  # handled: the broker may forget it

    async def _report_holes(self) -> None:
        """What a fault left half-received, reported most urgent first, once the
        broker has handed over what it held for this edge while it was away:
        parts the session kept are not holes, and asking for them again costs
        the thin link their bytes twice. So the holes are counted only after
        :data:`HOLE_QUIET` seconds without a message."""
        while (wait := self.heard + HOLE_QUIET - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        holes = await self.store.holes()
        for hole in holes:
            self._reply(hole)
        if holes:
            log.info("%d transfer(s) still have missing parts after the broker's backlog: asked the ground for them",
                     len(holes))

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        try:
            msg = parse_down(payload, self.cfg.link.max_fragment)
        except LinkError as err:
            self.drops(err.reason, f"message on {message.topic}: {err}")
            return
        if isinstance(msg, Poll):
            result = self.inbox.poll(msg)
        else:
            result = await self.store.receive(msg)
        if result.dropped:
            self.drops(result.dropped, result.note)
        if result.ack is not None:
            self._reply(result.ack)
        if result.complete is not None:
            self._completed(result.complete, Priority.BULK if result.priority is None else result.priority)

    def _completed(self, bid: bytes, priority: Priority) -> None:
        """Hand a complete transfer to the decider."""
        if bid in self.complete:
            return
        self.complete[bid] = _Complete(int(priority), time.monotonic(), bid)
        log.info("bundle %s complete (%s): to be decoded%s", bid.hex(), priority.name.lower(),
                 f" ({len(self.complete) - 1} more waiting)" if len(self.complete) > 1 else "")
        self.decide_wake.set()

    async def _decider(self) -> None:
        """Complete transfers, most urgent first, each decoded in a worker thread
        (the receiving goes on meanwhile), then accepted or rejected. Up to
        :data:`DECODERS` at once, so a flash bundle is decoded beside a long
        bulk one, not after it; a more urgent one than all of those abandons
        the least urgent, which is decoded again later."""
        running: dict[bytes, tuple[_Complete, threading.Event, asyncio.Task]] = {}
        failed: list[BaseException] = []

        def done(bid: bytes, task: asyncio.Task) -> None:
            running.pop(bid, None)
            if not task.cancelled() and task.exception() is not None:
                failed.append(task.exception())  # type: ignore[arg-type]
            self.decide_wake.set()

        try:
            while True:
                if failed:
                    raise failed[0]  # a bug: the daemon stops, and systemd restarts it from its store
                waiting = sorted(v for k, v in self.complete.items() if k not in running)
                if waiting and len(running) < DECODERS:
                    item, cancel = waiting[0], threading.Event()
                    task = asyncio.create_task(self._decide(item, cancel))
                    running[item.bundle_id] = (item, cancel, task)
                    task.add_done_callback(partial(done, item.bundle_id))
                    continue
                if waiting:
                    least = max(running.values(), key=lambda r: r[0])
                    if waiting[0] < least[0] and not least[1].is_set():
                        least[1].set()  # its worker stops at its next token; it waits its turn again
                self.decide_wake.clear()
                await self.decide_wake.wait()
        finally:  # the daemon is stopping: every worker thread ends at its next token
            for _, cancel, task in running.values():
                cancel.set()
                task.cancel()

    async def _decide(self, item: _Complete, cancel: threading.Event) -> None:
        try:
            await self._finish(item.bundle_id, cancel)
        except DecodeAbandoned:
            log.info("bundle %s: decoding set aside for a more urgent one", item.bundle_id.hex())
            return
        self.complete.pop(item.bundle_id, None)

    async def _finish(self, bid: bytes, cancel: threading.Event | None = None) -> None:
        """A transfer is complete: decode it off the event loop, then decide."""
        found = await self.store.assembly(bid)
        if found is None:
            return
        data, manifest = found
        outcome = await asyncio.to_thread(self.inbox.check, bid, data, manifest, cancel)
        result = await self.store.decide(bid, data, outcome)
        if result.dropped:
            self.drops(result.dropped, result.note)
        d = result.decided
        if d is not None and d.state == ACCEPTED:
            log.info("bundle %s accepted: %s (%s, seq %s)", d.bundle_id.hex(), d.title,
                     d.priority.name.lower() if d.priority is not None else "?", d.seq)
            if result.ack is not None and result.ack.missing_profiles:
                log.warning("bundle %s refers to %d voice profile(s) this edge lacks; asked the ground for "
                            "them, a stand-in voice speaks until they come", d.bundle_id.hex(),
                            len(result.ack.missing_profiles))
            self.accepted.set()
        elif d is not None:
            log.warning("bundle %s rejected: %s", d.bundle_id.hex(), d.reason)
        if d is not None:
            self.report.set()  # the decision goes up from the store (Inbox.reports), which keeps it until sent
        elif result.ack is not None:
            self._reply(result.ack)

    def _reply(self, reply: Ack) -> None:
        try:
            self.replies.put_nowait(reply)
        except asyncio.QueueFull:
            self.drops("replies", "too many acks waiting for the broker; the ground's poll will ask again")
        self.report.set()

    async def _publisher(self, client: aiomqtt.Client, topic: str) -> None:
        """Acks, then play reports (each marked sent once the broker has it)."""
        name = self.cfg.edge.name
        while True:
            with contextlib.suppress(TimeoutError):  # also now and then: `relay edge replay` leaves reports too
                await asyncio.wait_for(self.report.wait(), timeout=30.0)
            self.report.clear()
            while not self.replies.empty():
                reply = self.replies.get_nowait()
                counter = await self.store.next_counter()
                await client.publish(topic, reply.pack(self.key, name, counter), qos=1)
            for report in await self.store.reports():
                counter = await self.store.next_counter()
                await client.publish(topic, report.pack(self.key, name, counter), qos=1)
                await self.store.reported(report)

    # --- playing ---------------------------------------------------------------------------------

    def _examine(self) -> None:
        """At start: what `relay edge doctor` would say is wrong here, one line each (the broker and the
        keys are the daemon's own business: it has them or it stopped); then, for a sound card, how fast
        each engine renders here, once per device and set of voices (edge.speed: how far ahead to render)."""
        from edge import doctor

        try:
            for f in doctor.problems(doctor.examine(self.cfg, measure=False, broker=False)):
                if f.what != "speed":
                    log.warning("doctor: %s: %s", f.what, f.detail)
            if self.cfg.edge.speak and self.cfg.edge.play:
                self.player.measure_speeds()
        except Exception as err:  # noqa: BLE001 - a check that cannot run stops nothing: it plays as before
            log.warning("doctor: could not examine this node (%s)", err)

    async def _player(self) -> None:
        wait = self.cfg.edge.stream_wait
        idle_since = time.monotonic()
        deferred: dict[bytes, float] = {}  # bundles waiting for room on the output disk: when to try again
        short_since: float | None = None  # when the output disk last had no room for a bundle (one line a spell)
        waiting: set[bytes] = set()  # bundles that found no room and have not played since
        room = partial(make_room, self.cfg)
        await asyncio.to_thread(self._examine)
        first = True
        while True:
            now = time.monotonic()
            for bid in [b for b, t in deferred.items() if t <= now]:
                del deferred[bid]
            item = await self.store.next_to_play(wait, set(deferred))
            if item is None:
                if self.player.live and time.monotonic() - idle_since > wait:  # a stream ended without its last part
                    await asyncio.to_thread(self.player.end_stream)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.accepted.wait(), timeout=1.0 if self.player.live else 5.0)
                self.accepted.clear()
                continue
            idle_since = time.monotonic()
            bid = item.bundle_id
            await self.store.start_play(bid)
            if item.stream is None or item.stream.seq == 0:  # a stream's parts go on without a line each
                log.info("bundle %s (%s, %s, %.0f s): preparing its voices and speaking it%s", bid.hex(), item.title,
                         item.priority.name.lower() if item.priority is not None else "?", item.duration or 0.0,
                         " (the first takes longest: the voices load)" if first else "")
                first = False
            try:
                data = await self.store.data(bid)
                where = await asyncio.to_thread(self.player.speak, data, bid, item.received, room,
                                                item.priority == Priority.FLASH)
            except NoRoomYet as err:  # it waits; the bundles after it play meanwhile
                await self.store.abandon_play(bid)
                deferred[bid] = time.monotonic() + NO_ROOM_RETRY
                waiting.add(bid)
                if short_since is None or time.monotonic() - short_since > 3600:
                    log.warning("%s: no room for bundle %s (%s): %s; it waits, the bundles after it play "
                                "meanwhile", self.output.what, bid.hex(), item.title, err)
                    short_since = time.monotonic()
                continue
            except Exception as err:
                kind = self.output.classify(err)
                if kind is not None:  # the output disk is full (pruned, then waited for) or failing
                    await self.store.abandon_play(bid)
                    if kind == "full" and not self.output.pruned:
                        self.output.pruned = True
                        await self._prune()
                    else:
                        await asyncio.sleep(self.output.delay(err, kind))
                    continue
                reason = str(err) if isinstance(err, RelayError) else f"{err.__class__.__name__}: {err}"
                log.error("bundle %s (%s) cannot be played, quarantined: %s", bid.hex(), item.title, reason)
                waiting.discard(bid)
                await self.store.quarantine(bid, reason)
                self.report.set()
                continue
            self.output.ok()
            waiting.discard(bid)
            if short_since is not None and not waiting:
                log.info("%s: room again: the bundles that waited have played", self.output.what)
                short_since = None
            await self.store.played(bid, "auto", where)
            self.report.set()
            log.info("bundle %s played (%s) -> %s", bid.hex(), item.title, where)

    async def _housekeeping(self) -> None:
        """Transfers the ground gave up on expire (``link.partial_ttl``); what
        ``[retention]`` lets go of is pruned every ``retention.every`` seconds."""
        last = -1e18
        while True:
            for bid in await self.store.expire():
                log.info("transfer %s idle for %.0f s: dropped (the ground resends it if it still wants to)",
                         bid.hex(), self.cfg.link.partial_ttl)
            if time.monotonic() - last >= self.cfg.retention.every:
                last = time.monotonic()
                await self._prune()
            await asyncio.sleep(min(60.0, self.cfg.retention.every))

    async def _prune(self) -> None:
        """Apply ``[retention]`` (in a worker thread, on its own connections)."""
        await self.pruner()
