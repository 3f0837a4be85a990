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


def client(broker: Broker, identifier: str, manual_ack: bool = False) -> aiomqtt.Client:
    """A client for ``broker``. With ``manual_ack``, a QoS 1 message is
    acknowledged to the broker only when :func:`ack` is called (after the
    daemon has committed it): killed in between, the daemon gets it again
    from the broker instead of losing it."""
    password = None
    if broker.password_file is not None:
        try:
            password = broker.password_file.read_text().strip()
        except OSError as e:
            raise RelayError(f"{broker.password_file}: cannot read the broker password ({e.strerror})") from None
    tls = None
    if broker.tls:
        tls = ssl.create_default_context(cafile=str(broker.ca_file) if broker.ca_file else None)
        if broker.cert_file:
            tls.load_cert_chain(str(broker.cert_file), str(broker.key_file) if broker.key_file else None)
    c = aiomqtt.Client(
        broker.host, broker.port, identifier=identifier, clean_session=False, username=broker.username,
        password=password, tls_context=tls, keepalive=broker.keepalive, timeout=broker.timeout,
    )
    if manual_ack:  # before connecting: a persistent session's backlog arrives right after CONNACK
        c._client.manual_ack_set(True)  # aiomqtt has no switch for it; paho, underneath, does
    return c


def ack(c: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge ``message`` to the broker (clients made with ``manual_ack``)."""
    c._client.ack(message.mid, message.qos)


async def reconnecting(
    session: Callable[[aiomqtt.Client], Awaitable[None]],
    broker: Broker,
    identifier: str,
    stop: asyncio.Event,
    first_wait: float = 1.0,
    max_wait: float = 60.0,
    manual_ack: bool = False,
) -> None:
    """Connect, run ``session(client)``, and on any connection loss wait and
    connect again, until ``stop`` is set."""
    wait = first_wait
    while not stop.is_set():
        try:
            async with client(broker, identifier, manual_ack) as c:
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
