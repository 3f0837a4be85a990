"""A hostile broker user: publishes garbage, forged acks and oversized
messages on every topic it names, and listens on every topic it can, so a
test can show that the ACL keeps it out and the daemons shrug it off."""

from __future__ import annotations

import os
import random
import threading
import time

import paho.mqtt.client as mqtt

from relay.link.messages import VERSION, Ack, AckState, Fragment, Poll, Priority
from relay.link.signing import SigningKey
from relay.link.transfer import OutgoingTransfer


class Hostile:
    """``with Hostile(port, user, password, topics) as h:`` a thread of attacks
    until the block ends; ``h.heard`` is what it could read, ``h.sent`` counts."""

    def __init__(self, port: int, user: str | None, password: str | None, topics: list[str],
                 bundle_ids: list[bytes] | None = None, rate: float = 50.0, seed: int = 0) -> None:
        self.topics = topics
        self.bundle_ids = bundle_ids if bundle_ids is not None else []
        self.rate = rate
        self.rng = random.Random(seed)
        self.heard: list[tuple[str, bytes]] = []
        self.sent = 0
        self.key = SigningKey.generate()  # a key no one trusts
        self._stop = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hostile-{os.getpid()}-{port}")
        if user:
            self._client.username_pw_set(user, password)
        self._client.on_message = lambda c, u, m: self.heard.append((m.topic, bytes(m.payload)))
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", 1)
        self._client.connect_async("127.0.0.1", port)
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)

    def messages(self) -> list[bytes]:
        """One of each kind of bad message."""
        bid = self.rng.choice(self.bundle_ids) if self.bundle_ids else os.urandom(8)
        forged = OutgoingTransfer.create(bid, os.urandom(600), "ship1", Priority.FLASH, 340, self.key, 1,
                                         int(time.time()))
        return [
            os.urandom(self.rng.randint(1, 400)),  # noise
            Fragment(bid, 1, 3, os.urandom(327)).pack(),  # a part for a real transfer, not from it
            forged.fragment(0).pack(),  # a manifest signed by a stranger
            Poll.create(bid, "ship1", self.key, int(time.time())).pack(),  # a forged poll
            Ack(bid, AckState.ACCEPTED).pack(self.key, "ship1"),  # "delivered!", signed by a stranger
            Ack(bid, AckState.PLAYED).body(),  # unsigned
            bytes([VERSION << 4]) + bid + (1).to_bytes(2, "big") + (2).to_bytes(2, "big"),  # a part with no data
            Ack(bid, AckState.INCOMPLETE, ((0, 60000),)).pack(self.key, "ship1"),  # "resend everything"
        ]

    def _run(self) -> None:
        while not self._stop.is_set():
            for payload in self.messages():
                topic = self.rng.choice(self.topics)
                self._client.publish(topic, payload, qos=self.rng.choice((0, 1)))
                self.sent += 1
                if self._stop.wait(1.0 / self.rate):
                    return

    def oversized(self, topic: str, size: int = 300_000) -> None:
        """One message over the broker's max_packet_size (the broker disconnects us; we reconnect)."""
        self._client.publish(topic, os.urandom(size), qos=0)

    def __enter__(self) -> Hostile:
        self._client.loop_start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.loop_stop()
        self._client.disconnect()
