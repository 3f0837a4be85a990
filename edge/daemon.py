"""The edge daemon: fragments in, each bundle spoken once.

One MQTT session (persistent, QoS 1, re-established after any drop)
receives fragments and polls on the edge's data topic, stores them in the
inbox (:mod:`relay.inbox`), which verifies and accepts or rejects complete
bundles, and publishes the acks the inbox asks for. A player task speaks
accepted bundles, most urgent first, one at a time, in a worker thread: on
the audio device through ``sounddevice``, or as WAV files in ``output_dir``
when there is no device or ``play = false``. A bundle is marked played when
its playback finished, so none is played twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiomqtt

from relay.config import EdgeConfig
from relay.errors import RelayError
from relay.inbox import ACCEPTED, Inbox
from relay.link import Fragment, LinkError, Poll, parse_down, topics
from relay.mqtt import ack, reconnecting
from relay.profiles import ProfileStore
from relay.service import supervise
from relay.signing import Keyring, VerifyKey

log = logging.getLogger("relay.edge")


class Speaker:
    """Speaks bundles: voices loaded once, an output per bundle (worker thread only)."""

    def __init__(self, cfg: EdgeConfig) -> None:
        self.cfg = cfg
        self._catalog = None
        if cfg.edge.speak and cfg.edge.voice != "auto":
            from edge.catalog import Catalog

            self._catalog = Catalog()
            self._catalog.find(cfg.edge.voice)  # a wrong key stops the start with one line, not every bundle later
        self._device_ok = cfg.edge.play

    def __call__(self, data: bytes, bundle_id: bytes, received: float) -> str:
        """Speak one bundle; returns where it went (device or file)."""
        from edge.catalog import Catalog
        from edge.rehydrate import output_rate, rehydrate, render
        from edge.voices import resolve_speakers
        from relay.audio import write_wav
        from relay.wire import decode_bundle

        e = self.cfg.edge
        if self._catalog is None:
            self._catalog = Catalog()
        bundle = decode_bundle(data, f"bundle {bundle_id.hex()}")
        store = ProfileStore(e.state_dir / "profiles.db")
        try:
            resolved = resolve_speakers(bundle, store)
            if not bundle.segments and bundle.clips:  # all real audio: no voice to load
                voices, prosody = None, {}
            elif e.voice == "auto":
                from edge.assign import AssignmentStore
                from edge.voicebank import VoiceBank
                from edge.voices import cast

                # the bank and stores are SQLite: opened in this worker thread, per bundle
                chosen = cast(resolved.profiles, self._catalog, VoiceBank(self._catalog),
                              AssignmentStore(e.state_dir / "profiles.db"), codecs=self.cfg.codecs.settings())
                voices, prosody = chosen.voices, chosen.prosody
            else:
                voices, prosody = self._catalog.load(e.voice), {}
        finally:
            store.close()
        rate = output_rate(voices)
        if self._device_ok:
            from edge.playback import DeviceOutput, PlaybackError, play

            try:
                sink = DeviceOutput(rate, e.device)
            except PlaybackError as err:
                log.warning("%s; writing WAV files to %s instead", err, e.output_dir)
                self._device_ok = False
            else:
                play(rehydrate(bundle, voices, prosody, self.cfg.codecs.settings()), sink)
                return "device"
        audio, _ = render(bundle, voices, prosody, self.cfg.codecs.settings())
        # named by arrival, not by now: a playback interrupted by a crash and
        # redone after the restart rewrites the same file instead of adding one
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(received))
        out = e.output_dir / f"{stamp}-{bundle_id.hex()}.wav"
        write_wav(out, audio, rate)
        return str(out)


class EdgeDaemon:
    def __init__(self, config: EdgeConfig) -> None:
        self.cfg = config
        e = config.edge
        keys = [VerifyKey.parse(k, f"edge.trusted_keys[{i}]") for i, k in enumerate(e.trusted_keys)]
        self.inbox = Inbox(e.state_dir / "inbox.db", e.name, Keyring(keys), ProfileStore(e.state_dir / "profiles.db"))
        self.speaker = Speaker(config)
        self.stop = asyncio.Event()
        self.accepted = asyncio.Event()
        self.rejected: dict[str, int] = {}

    async def run(self) -> None:
        e = self.cfg.edge
        e.output_dir.mkdir(parents=True, exist_ok=True)
        ident = f"relay-edge-{e.name}"
        jobs = {"link": reconnecting(self._session, self.cfg.broker, ident, self.stop, manual_ack=True)}
        if e.speak:
            jobs["player"] = self._player()
        else:
            log.info("speak = false: bundles are stored and acknowledged, not played")
        await supervise(self.stop, jobs)

    async def _session(self, client: aiomqtt.Client) -> None:
        data_topic, ack_topic = topics(self.cfg.broker.topic_prefix, self.cfg.edge.name)
        await client.subscribe(data_topic, qos=1)
        async with asyncio.TaskGroup() as replies:
            async for message in client.messages:
                try:
                    msg = parse_down(bytes(message.payload))
                    reply = self.inbox.poll(msg.bundle_id) if isinstance(msg, Poll) else self._receive(msg)
                except LinkError as err:
                    self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
                    log.warning("message on %s ignored: %s", data_topic, err)
                    reply = None
                ack(client, message)  # stored: the broker may forget it
                if reply is not None:
                    # in a task: a reply waiting for the broker must not keep this loop from
                    # noticing that the link went down (a lost reply is asked for again by a poll)
                    replies.create_task(client.publish(ack_topic, reply.pack(), qos=1))

    def _receive(self, frag: Fragment):
        result = self.inbox.receive(frag)
        if result.decided is not None:
            d = result.decided
            if d.state == ACCEPTED:
                log.info("bundle %s accepted: %s (%s)", d.bundle_id.hex(), d.title, d.priority.name.lower())
                if result.ack is not None and result.ack.missing_profiles:
                    log.warning("bundle %s refers to %d voice profile(s) this edge lacks; asked the ground for "
                                "them, a stand-in voice speaks until they come", d.bundle_id.hex(),
                                len(result.ack.missing_profiles))
                self.accepted.set()
            else:
                log.warning("bundle %s rejected: %s", d.bundle_id.hex(), d.reason)
        return result.ack

    async def _player(self) -> None:
        while True:
            item = self.inbox.next_to_play()
            if item is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.accepted.wait(), timeout=5.0)
                self.accepted.clear()
                continue
            try:
                data = self.inbox.data(item.bundle_id)
                where = await asyncio.to_thread(self.speaker, data, item.bundle_id, item.received)
            except RelayError as err:
                log.error("bundle %s cannot be spoken: %s", item.bundle_id.hex(), err)
                where = f"failed: {err}"
            self.inbox.played(item.bundle_id, "auto", where)
            log.info("bundle %s played (%s) -> %s", item.bundle_id.hex(), item.title, where)

