"""Running a daemon in the foreground, as systemd expects: logs to stderr
(the journal), SIGTERM and SIGINT stop it cleanly.

A daemon is a few long-lived tasks (link, encoder, player…). Each handles
the failures it expects (a dead broker is waited out, a bad file is logged
and skipped); anything else ends the task, and :func:`supervise` then stops
the whole daemon with the error logged and a non-zero exit, so that
systemd's ``Restart=on-failure`` brings it back from its durable state —
never a daemon that runs on with its link task silently gone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Protocol

log = logging.getLogger("relay.service")


class Daemon(Protocol):
    stop: asyncio.Event

    async def run(self) -> None: ...


class Drops:
    """What a daemon drops, counted by reason, and logged without flooding the
    journal: the first of each reason at once, then at most one summary line
    per reason every ``every`` seconds (an attacker's flood is a count, not a
    million lines)."""

    def __init__(self, log: logging.Logger, every: float = 60.0) -> None:
        self.log = log
        self.every = every
        self.counts: Counter[str] = Counter()
        self._logged: dict[str, tuple[float, int]] = {}  # reason -> (when, count then)

    def __call__(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        now = time.monotonic()
        last = self._logged.get(reason)
        if last is None:
            self.log.warning("dropped: %s", message)
            self._logged[reason] = (now, self.counts[reason])
        elif now - last[0] >= self.every:
            more = self.counts[reason] - last[1]
            self.log.warning("dropped %d more (%s) in the last %.0f s; latest: %s", more, reason, now - last[0],
                             message)
            self._logged[reason] = (now, self.counts[reason])


class TaskFailed(Exception):
    """One of a daemon's tasks ended with an unexpected error."""


async def supervise(stop: asyncio.Event, jobs: dict[str, Coroutine]) -> None:
    """Run ``jobs`` until ``stop`` is set or one of them ends; then cancel the
    rest. A job that raised makes this raise :class:`TaskFailed`."""
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in jobs.items()}
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [(tasks[t], t.exception()) for t in done if t is not stopper and not t.cancelled()]
    for t in [stopper, *tasks]:
        t.cancel()
    await asyncio.gather(stopper, *tasks, return_exceptions=True)
    for name, exc in failed:
        if exc is not None:
            log.error("%s task failed", name, exc_info=exc)
            raise TaskFailed(f"{name}: {exc}")
        if not stop.is_set():
            raise TaskFailed(f"{name} task ended unexpectedly")


def serve(daemon: Daemon) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop.set)
        await daemon.run()

    try:
        asyncio.run(main())
    except TaskFailed as e:
        log.error("stopping: %s (systemd restarts the service; its queues are on disk)", e)
        sys.exit(1)
