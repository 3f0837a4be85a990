"""The thin-link simulator the fault tests and the soak benchmark stand on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from relay.link.linksim import LinkSim

RELAY = str(Path(sys.executable).with_name("relay"))


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    got = b""
    while len(got) < len(payload):
        chunk = await asyncio.wait_for(reader.read(4096), 10)
        if not chunk:
            break
        got += chunk
    writer.close()
    return got


def test_throttles_counts_cuts_refuses_and_restores():
    async def run():
        server, port = await _echo_server()
        async with LinkSim(port, rate=4000.0, latency=0.1) as sim:
            payload = bytes(range(256)) * 32  # 8 KiB
            t = time.monotonic()
            assert await _roundtrip(sim.port, payload) == payload  # intact, in order
            # a lower bound only (a slow machine may take longer): 8 KiB cannot cross at 4 KB/s in under ~2 s
            assert time.monotonic() - t >= len(payload) / 4000.0 - 0.2
            assert sim.stats.up == sim.stats.down == len(payload)

            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(b"ping")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(10), 5) == b"ping"
            sim.cut()
            assert await asyncio.wait_for(reader.read(10), 5) == b""  # the open connection died
            refused_reader, _ = await asyncio.open_connection("127.0.0.1", sim.port)
            assert await asyncio.wait_for(refused_reader.read(10), 5) == b""  # and new ones are refused
            assert sim.stats.refused == 1 and sim.stats.cuts == 1
            sim.restore()
            assert await _roundtrip(sim.port, b"back") == b"back"
        server.close()

    asyncio.run(run())


def test_link_sim_command_rejects_a_bad_target_in_one_line():
    proc = subprocess.run([RELAY, "link-sim", "--to", "nonsense"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == "error: --to 'nonsense': expected HOST:PORT"
