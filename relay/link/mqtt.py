"""One MQTT connection per daemon (aiomqtt), and how it comes back after a drop.

Both daemons connect with a fixed client id and a persistent session
(``clean_session=False``) and use QoS 1, so the broker keeps what it holds
for a daemon that is away (mosquitto writes it to disk with persistence on)
and redelivers what was not acknowledged. That is the broker's half; the
other half is the link protocol's own end-to-end acks, which recover
whatever a broker loses anyway.

:func:`reconnecting` runs a session function again and again, with a
capped exponential backoff, logging one line per failure: a dead broker is
a state the daemons wait out, not an error that stops them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from relay.config import Broker
from relay.errors import RelayError

log = logging.getLogger("relay.mqtt")
MAX_QUEUED_QOS0 = 1000  # messages at QoS 0 held unprocessed before more are dropped (the relay uses QoS 1)


class ConnectionSettings:
    """What a daemon needs to connect, read and checked once at its start, so a
    missing password file or certificate is one line then, not a traceback at
    every reconnect."""

    def __init__(self, broker: Broker, username: str) -> None:
        self.broker = broker
        self.username = username
        self.password: str | None = None
        if broker.password_file is not None:
            try:
                self.password = broker.password_file.read_text().strip()
            except OSError as e:
                raise RelayError(f"{broker.password_file}: cannot read the broker password ({e.strerror})") from None
            except UnicodeDecodeError:
                raise RelayError(f"{broker.password_file}: the broker password file is not text") from None
        self.tls: ssl.SSLContext | None = None
        if broker.tls:
            try:
                self.tls = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
                if broker.cert_file:
                    self.tls.load_cert_chain(str(broker.cert_file), str(broker.key_file) if broker.key_file else None)
            except (OSError, ssl.SSLError) as e:
                raise RelayError(f"broker TLS files: {e}") from None


class _Incoming(asyncio.Queue):
    """aiomqtt's message queue, bounded for QoS 0 only: QoS 1 messages are
    paced by the broker's in-flight window (they are acknowledged only after
    they are handled), and one dropped unacknowledged would stall that window."""

    def put_nowait(self, item: aiomqtt.Message) -> None:
        if item.qos == 0 and self.qsize() >= MAX_QUEUED_QOS0:
            return
        super().put_nowait(item)


def client(settings: ConnectionSettings, identifier: str, manual_ack: bool = False) -> aiomqtt.Client:
    """A client for the broker. With ``manual_ack``, a QoS 1 message is
    acknowledged to the broker only when :func:`ack` is called (after the
    daemon has committed it): killed in between, the daemon gets it again
    from the broker instead of losing it."""
    broker = settings.broker
    c = aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=False, username=settings.username,
        password=settings.password, tls_context=settings.tls, keepalive=broker.keepalive, timeout=broker.timeout,
        queue_type=_Incoming,
    )
    if manual_ack:  # before connecting: a persistent session's backlog arrives right after CONNACK
        c._client.manual_ack_set(True)  # aiomqtt has no switch for it; paho, underneath, does
    return c


def ack(c: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge ``message`` to the broker (clients made with ``manual_ack``)."""
    c._client.ack(message.mid, message.qos)


async def reconnecting(
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    settings: ConnectionSettings,
    identifier: str,
    stop: asyncio.Event,
    first_wait: float = 1.0,
    max_wait: float = 60.0,
    manual_ack: bool = False,
) -> None:
    """Connect, run ``session(client)``, and on any connection loss wait and
    connect again, until ``stop`` is set."""
    wait = first_wait
    broker = settings.broker
    while not stop.is_set():
        try:
            async with client(settings, identifier, manual_ack) as c:
                log.info("connected to %s:%d as %s", broker.host, broker.port, identifier)
                wait = first_wait
                await session(c)
        except* aiomqtt.MqttError as group:  # also from inside a session's TaskGroup
            log.warning("broker %s:%d: %s; retrying in %.0f s", broker.host, broker.port, group.exceptions[0], wait)
        if stop.is_set():
            break
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            pass
        wait = min(wait * 2, max_wait)


def probe(host: str, port: int, timeout: float = 10.0) -> float | None:
    """Seconds a broker took to answer an anonymous MQTT CONNECT with a CONNACK
    (any return code: "not authorized" is an answer too), or None if it did not
    within ``timeout``. A broker that accepts connections but never answers is
    hung, not busy: mosquitto 2.0.11's TLS bridge has been seen to spin at full
    CPU after the link drops mid-handshake, answering nobody, until restarted
    (the watchdog in ``systemd/relay-broker-watchdog.*`` does that)."""
    import os
    import socket
    import time

    ident = f"relay-probe-{os.getpid()}".encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(ident).to_bytes(2, "big") + ident
    packet = bytes([0x10, len(body)]) + body
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(max(0.1, timeout - (time.monotonic() - started)))
            s.sendall(packet)
            answer = b""
            while len(answer) < 4:
                chunk = s.recv(4 - len(answer))
                if not chunk:
                    return None
                answer += chunk
            if answer[0] != 0x20:
                return None
            try:
                s.sendall(b"\xe0\x00")  # DISCONNECT
            except OSError:
                pass
            return time.monotonic() - started
    except OSError:
        return None
