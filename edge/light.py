"""Hundreds of edges in one process, at the protocol level, for the fleet benchmark.

A :class:`LightEdge` is an edge daemon without voices: the real store
(:class:`edge.store.Inbox`: every part checked against the ground's signed
hash before it is kept, the bundle decoded under the limits, one decision
per bundle), acks and reports signed with the edge's own key and numbered as
the daemon numbers them, one MQTT session of its own (QoS 1, a persistent
session, each message acknowledged to the broker once handled). A bundle it
accepts is "played" at once, so the ground hears a play report for each, as
from a real edge. It counts what it played, so a bundle played twice shows.

``python -m edge.light SPEC.json`` runs the edges a spec names
until SIGTERM, then writes their counts beside the spec
(``benchmarks/fleet.py`` starts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections import Counter
from pathlib import Path

import aiomqtt

from edge.store import ACCEPTED, Inbox
from relay.config import Broker, EdgeLink
from relay.link.messages import Ack, LinkError, Poll, parse_down, topics
from relay.link.mqtt import ConnectionSettings, ack, reconnecting
from relay.link.signing import Keyring, SigningKey, VerifyKey

log = logging.getLogger("relay.edge.light")


class LightEdge:
    """One edge: its store, its key, its counts."""

    def __init__(self, name: str, folder: Path, key: SigningKey, ground: VerifyKey, prefix: str = "relay") -> None:
        self.name, self.key, self.prefix = name, key, prefix
        self.inbox = Inbox(folder / f"{name}.db", name, Keyring([ground]), link=EdgeLink(max_clock_skew=0))
        self.plays: Counter[bytes] = Counter()
        self.messages = 0
        self.dropped = 0

    def handle(self, payload: bytes) -> tuple[list[Ack], list[Ack]]:
        """One message from the ground: what to send back (acks; the store's decisions and play reports,
        each to be marked reported once the broker has it)."""
        self.messages += 1
        try:
            msg = parse_down(payload, self.inbox.link.max_fragment)
        except LinkError:
            self.dropped += 1
            return [], []
        got = self.inbox.poll(msg) if isinstance(msg, Poll) else self.inbox.receive(msg)
        if got.dropped:
            self.dropped += 1
        out = [got.ack] if got.ack is not None else []
        if got.complete is not None:
            decided = self.inbox.finish(got.complete).decided
            if decided is not None and decided.state == ACCEPTED:
                self.inbox.played(decided.bundle_id, "light", None)
                self.plays[decided.bundle_id] += 1
        return out, self.inbox.reports()

    async def session(self, client: aiomqtt.Client) -> None:
        data, acks = topics(self.prefix, self.name)
        await client.subscribe(data, qos=1)
        async for message in client.messages:
            payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
            replies, reports = self.handle(payload)
            for reply in replies:
                await client.publish(acks, reply.pack(self.key, self.name, self.inbox.next_counter()), qos=1)
            for report in reports:
                await client.publish(acks, report.pack(self.key, self.name, self.inbox.next_counter()), qos=1)
                self.inbox.reported(report)
            ack(client, message)

    def counts(self) -> dict:
        return {"bundles": len(self.plays), "played_twice": sum(1 for n in self.plays.values() if n > 1),
                "messages": self.messages, "dropped": self.dropped}


async def run(spec: dict, stop: asyncio.Event) -> dict[str, dict]:
    """Every edge of ``spec`` connected until ``stop``; their counts."""
    folder = Path(spec["folder"])
    ground = VerifyKey.parse(spec["ground_key"], "ground_key")
    broker = Broker(host="127.0.0.1", port=spec["port"])
    edges = [LightEdge(name, folder, SigningKey.load(Path(key)), ground) for name, key in spec["edges"].items()]
    tasks = [asyncio.create_task(reconnecting(e.session, ConnectionSettings(broker, e.name), f"relay-edge-{e.name}",
                                              stop, manual_ack=True)) for e in edges]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {e.name: e.counts() for e in edges}


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    path = Path(argv[0])
    spec = json.loads(path.read_text())

    async def go() -> dict[str, dict]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(spec, stop)

    counts = asyncio.run(go())
    with contextlib.suppress(OSError):
        path.with_suffix(".counts.json").write_text(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1:])
