"""A thin link on loopback: a TCP proxy that throttles, delays and drops.

Put it between a daemon and its broker to see what the relay does on a
satellite modem without one: every byte waits for its share of ``rate``
(one pipe per direction, shared by all connections, as on a real modem),
arrives ``latency`` seconds later, and the link can be cut (every
connection aborted, new ones refused) by hand or at random with
``outages``. It counts what crosses in each direction, which is how the
soak benchmark measures the protocol's overhead on the wire.

Used by the fault tests and ``benchmarks/soak.py`` in-process
(:class:`LinkSimThread`), and by operators as ``relay link-sim`` to try a
site's configuration before the real link exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass

from relay.link.budget import Budget

log = logging.getLogger("relay.linksim")
CHUNK = 512  # bytes per step through the throttle: small, so directions and connections interleave


@dataclass(slots=True)
class LinkStats:
    """What crossed the link so far."""

    up: int = 0  # client -> broker
    down: int = 0  # broker -> client
    connections: int = 0
    refused: int = 0
    cuts: int = 0

    def to_dict(self) -> dict:
        return {"up_bytes": self.up, "down_bytes": self.down, "connections": self.connections,
                "refused": self.refused, "cuts": self.cuts}


class _Pipe:
    """One direction: a throttle, then a delay line, in order."""

    def __init__(self, rate: float, latency: float) -> None:
        self.budget = Budget(rate, [], burst=CHUNK) if rate > 0 else None
        self.latency = latency

    async def carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count) -> None:
        line: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await line.get()) is not None:
                due, chunk = item
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
                count(len(chunk))
            writer.close()

        out = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(CHUNK):
                if self.budget is not None:
                    await self.budget.take(len(chunk))
                line.put_nowait((time.monotonic() + self.latency, chunk))
            line.put_nowait(None)
            await out
        finally:
            out.cancel()


class LinkSim:
    """``async with LinkSim(broker_port, rate=...) as sim:`` listens on ``sim.port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", rate: float = 0.0, latency: float = 0.0,
                 listen_port: int = 0, listen_host: str = "127.0.0.1",
                 outages: tuple[float, float] | None = None, seed: int = 0) -> None:
        """``rate`` in bytes per second each way (0: unthrottled); ``outages``
        = (mean seconds between cuts, seconds each cut lasts), at random."""
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.up_pipe, self.down_pipe = _Pipe(rate, latency), _Pipe(rate, latency)
        self.outages = outages
        self.rng = random.Random(seed)
        self.stats = LinkStats()
        self.is_up = True
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()
        self._flapper: asyncio.Task | None = None

    async def __aenter__(self) -> LinkSim:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.outages:
            self._flapper = asyncio.create_task(self._flap(*self.outages))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._flapper:
            self._flapper.cancel()
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    def cut(self) -> None:
        """The link goes down: every connection is aborted, new ones refused."""
        self.is_up = False
        self.stats.cuts += 1
        for t in list(self._conns):
            t.cancel()
        log.info("link cut (%d connection(s) dropped)", len(self._conns))

    def restore(self) -> None:
        self.is_up = True
        log.info("link restored")

    async def _flap(self, mean_up: float, outage: float) -> None:
        while True:
            await asyncio.sleep(self.rng.expovariate(1.0 / mean_up))
            self.cut()
            await asyncio.sleep(outage)
            self.restore()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            self.stats.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None  # a connection handler always runs in a task
        self._conns.add(task)
        self.stats.connections += 1
        up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self.up_pipe.carry(reader, up_writer, self._count_up),
                self.down_pipe.carry(up_reader, writer, self._count_down),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # cut: drop both sides without a goodbye, as a dead modem does
        finally:
            self._conns.discard(task)
            writer.transport.abort()
            if up_writer is not None:
                up_writer.transport.abort()

    def _count_up(self, n: int) -> None:
        self.stats.up += n

    def _count_down(self, n: int) -> None:
        self.stats.down += n


class LinkSimThread:
    """A :class:`LinkSim` on its own event loop in a thread, for synchronous
    callers (tests, benchmarks that drive daemon processes)."""

    def __init__(self, target_port: int, **kwargs) -> None:
        self.sim = LinkSim(target_port, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="linksim", daemon=True)

    def __enter__(self) -> LinkSimThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.__aenter__(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.sim.__aexit__(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def stats(self) -> LinkStats:
        return self.sim.stats

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self.sim.cut)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self.sim.restore)
