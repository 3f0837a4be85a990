"""The ground daemon: spool folder and operator queue in, signed fragments out.

Three tasks share one asyncio loop:

* the spool watcher queues every file that lands in ``spool_dir`` (audio is
  encoded, a ``.bundle`` goes straight out) once it has stopped growing;
* the encoder takes queued audio, most urgent first, and runs the ground
  pipeline (Whisper, diarization, profiles) in a worker thread;
* the link session (one MQTT connection, re-established after any drop)
  publishes one fragment at a time, always of the most urgent bundle, within
  the bandwidth budget, polls edges whose acks are overdue, and applies the
  acks that come back.

All state is in the outbox (:mod:`relay.outbox`); the daemon holds nothing
that a kill -9 could lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

import aiomqtt

from relay.budget import Budget
from relay.config import GroundConfig
from relay.errors import RelayError
from relay.link import Ack, LinkError, Poll, topics
from relay.mqtt import ack, reconnecting
from relay.outbox import Outbox
from relay.profiles import ProfileStore
from relay.service import supervise
from relay.signing import SigningKey

log = logging.getLogger("relay.ground")
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm"}


class GroundDaemon:
    def __init__(self, config: GroundConfig) -> None:
        self.cfg = config
        g = config.ground
        self.key = SigningKey.load(g.signing_key)
        self.outbox = Outbox(g.state_dir / "queue.db")
        self.profiles_path = g.state_dir / "profiles.db"
        self.profiles = ProfileStore(self.profiles_path)
        self.budget = Budget(config.link.rate, config.link.parsed_windows(), burst=config.link.fragment_size)
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self._models = None

    # --- edges and topics ------------------------------------------------------------------------

    def edges(self) -> list[str] | None:
        """The edges this ground sends to: configured, or all (None)."""
        return list(self.cfg.ground.edges) or None

    # --- main ------------------------------------------------------------------------------------

    async def run(self) -> None:
        requeued = self.outbox.recover()
        if requeued:
            log.info("%d entr%s interrupted while encoding, queued again", requeued, "y" if requeued == 1 else "ies")
        ident = f"relay-ground-{self.cfg.ground.name}"
        jobs = {"encoder": self._encoder(),
                "link": reconnecting(self._session, self.cfg.broker, ident, self.stop, manual_ack=True)}
        if self.cfg.ground.spool_dir is not None:
            jobs["spool"] = self._spool()
        await supervise(self.stop, jobs)

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken (new work, an ack) or ``seconds`` pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)
        self.wake.clear()

    # --- the link --------------------------------------------------------------------------------

    async def _session(self, client: aiomqtt.Client) -> None:
        prefix = self.cfg.broker.topic_prefix
        await client.subscribe(f"{prefix}/+/a", qos=1)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client))
            tg.create_task(self._send(client))

    async def _receive(self, client: aiomqtt.Client) -> None:
        link = self.cfg.link
        async for message in client.messages:
            edge = str(message.topic).split("/")[-2]
            try:
                reply = Ack.unpack(bytes(message.payload))
            except LinkError as e:
                log.warning("ack from %s ignored: %s", edge, e)
                ack(client, message)
                continue
            item, delivered = self.outbox.on_ack(reply, edge, link.ack_timeout)
            for pid in delivered:
                self.profiles.mark_sent(pid)
            for pid in reply.missing_profiles:
                self.profiles.mark_unsent(pid)
            ack(client, message)  # applied and committed
            if item is None:
                log.info("ack from %s for unknown bundle %s ignored", edge, ack.bundle_id.hex())
            else:
                log.info("%s: entry %d (%s) %s", edge, item.id, item.title, item.state
                         + (f", {item.pending} fragment(s) to resend" if item.pending else "")
                         + (f": {item.reason}" if item.reason and item.state == "failed" else ""))
            self.wake.set()

    async def _send(self, client: aiomqtt.Client) -> None:
        link, prefix = self.cfg.link, self.cfg.broker.topic_prefix
        last_prune = time.time()
        while True:
            await self.budget.wait_window()
            out = self.outbox.next_fragment(link.fragment_size, self.key.sign, self.edges())
            if out is None:
                out = self.outbox.due_poll(link.ack_timeout, link.max_poll_interval, self.edges())
            if out is None:
                await self._sleep(1.0)
                continue
            payload = out.fragment.pack() if out.fragment is not None else Poll(out.bundle_id).pack()
            await self.budget.take(len(payload))
            await client.publish(topics(prefix, out.edge)[0], payload, qos=1)
            self.outbox.sent(out, len(payload), link.ack_timeout)
            if time.time() - last_prune > 600:
                self.outbox.prune_log()
                last_prune = time.time()

    # --- encoding --------------------------------------------------------------------------------

    async def _encoder(self) -> None:
        while True:
            item = self.outbox.claim_encoding()
            if item is None:
                await self._sleep(2.0)
                continue
            log.info("encoding entry %d: %s", item.id, item.source)
            try:
                bundle_id, data, full = await asyncio.to_thread(self._encode, Path(item.source), item.title)
            except RelayError as e:
                self.outbox.fail(item.id, str(e))
                log.warning("entry %d failed: %s", item.id, e)
                continue
            if self.outbox.encoded(item.id, bundle_id, data, full):
                log.info("entry %d ready: %d bytes", item.id, len(data))
            self.wake.set()

    def _encode(self, path: Path, title: str) -> tuple[bytes, bytes, list[bytes]]:
        """In a worker thread: audio file -> (bundle id, bundle, ids of profiles sent in full)."""
        from ground.encode import encode_file
        from ground.tiers import TierPolicy
        from ground.transcribe import Transcriber

        if self._models is None:
            diarizer = None
            if self.cfg.ground.diarize:
                from ground.diarize import Diarizer

                diarizer = Diarizer()
            self._models = (Transcriber(self.cfg.ground.model), diarizer)
        transcriber, diarizer = self._models
        store = ProfileStore(self.profiles_path)  # this thread's own connection
        try:
            policy = TierPolicy.from_config(self.cfg.tiers, self.cfg.codecs)
            result = encode_file(path, transcriber, title=title, diarizer=diarizer, store=store, tier=policy)
            full = []
            if result.plan is not None:
                for profile in result.plan.remember:  # known from now on; "sent" only once acknowledged
                    store.put(profile, sent=False)
                full = [s.profile_id for s in result.plan.speakers if s.profile is not None]
        finally:
            store.close()
        return result.bundle.bundle_id, result.data, full

    # --- the spool folder ------------------------------------------------------------------------

    async def _spool(self) -> None:
        spool = self.cfg.ground.spool_dir
        taken = spool / ".taken"
        taken.mkdir(parents=True, exist_ok=True)
        self._recover_taken(taken)
        while True:
            now = time.time()
            for path in sorted(spool.iterdir()):
                if not path.is_file() or path.name.startswith("."):
                    continue
                try:
                    if now - path.stat().st_mtime < self.cfg.ground.spool_settle:
                        continue  # still being written
                    dest = taken / f"{int(now * 1000)}-{path.name}"
                    os.replace(path, dest)  # same filesystem: atomic
                    self._queue_file(dest)
                except (OSError, RelayError) as e:
                    log.warning("spool %s: %s", path.name, e)
            await asyncio.sleep(1.0)

    def _recover_taken(self, taken: Path) -> None:
        """Files moved out of the spool by a daemon killed before queueing them."""
        known = {i.source for i in self.outbox.items()}
        for path in sorted(taken.iterdir()):
            if str(path.resolve()) not in known:
                self._queue_file(path)

    def _queue_file(self, path: Path) -> None:
        edge = self.cfg.ground.default_edge
        if edge is None:
            raise RelayError("no default_edge configured for spooled files")
        title = path.name.split("-", 1)[-1].rsplit(".", 1)[0]
        if path.suffix == ".bundle":
            row = self.outbox.add_bundle(path.read_bytes(), edge, title=title, source=str(path.resolve()))
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            row = self.outbox.add_audio(path, edge, title=title)
        else:
            raise RelayError(f"not audio or a bundle ({path.suffix or 'no extension'}); left in {path.parent}")
        log.info("spool: queued %s as entry %d for %s", path.name, row, edge)
        self.wake.set()
