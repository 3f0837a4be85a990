"""Running a daemon in the foreground, as systemd expects: logs to stderr
(the journal), SIGTERM and SIGINT stop it cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol


class Daemon(Protocol):
    stop: asyncio.Event

    async def run(self) -> None: ...


def serve(daemon: Daemon) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop.set)
        await daemon.run()

    asyncio.run(main())
