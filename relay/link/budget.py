"""The bandwidth the ground may use: a byte rate and daily link windows.

A token bucket (``rate`` bytes per second, a burst of one fragment, so the
link never sees more than one fragment ahead of the rate) gates every
publish; outside the operator's daily UTC windows nothing is sent at all.
:func:`eta` turns a backlog into the time it will take, windows included.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

Windows = list[tuple[dtime, dtime]]


def in_window(windows: Windows, at: datetime) -> bool:
    if not windows:
        return True
    t = at.time()
    for start, end in windows:
        if (start <= t < end) if start <= end else (t >= start or t < end):  # a window may cross midnight
            return True
    return False


def seconds_to_window(windows: Windows, at: datetime) -> float:
    """0 inside a window, else the seconds until the next one opens."""
    if in_window(windows, at):
        return 0.0
    best = None
    for start, _ in windows:
        candidate = at.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        if candidate <= at:
            candidate += timedelta(days=1)
        wait = (candidate - at).total_seconds()
        best = wait if best is None else min(best, wait)
    return best or 0.0


def eta(backlog_bytes: int, rate: float, windows: Windows, now: datetime | None = None) -> float | None:
    """Seconds until ``backlog_bytes`` are through at ``rate``, sending only in
    ``windows`` (window by window, not minute by minute: a fleet's status asks
    this for thousands of rows); None when there is no rate limit to estimate
    from, or when the windows would take over a year."""
    if rate <= 0:
        return None
    now = now or datetime.now(UTC)
    if not windows:
        return backlog_bytes / rate
    left = backlog_bytes / rate  # seconds of open window still needed
    if left <= 0:
        return 0.0
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for d in range(-1, 367):  # a window that opened yesterday may still be open past midnight
        base = day + timedelta(days=d)
        spans = []
        for start, end in windows:
            a = base.replace(hour=start.hour, minute=start.minute, second=start.second)
            b = base.replace(hour=end.hour, minute=end.minute, second=end.second)
            if b <= a:  # crosses midnight
                b += timedelta(days=1)
            spans.append((a, b))
        for a, b in sorted(spans):
            a = max(a, now)
            if b <= a:
                continue
            open_s = (b - a).total_seconds()
            if open_s >= left:
                return (a - now).total_seconds() + left
            left -= open_s
    return None


class Budget:
    """Await :meth:`take` before sending ``n`` bytes."""

    def __init__(self, rate: float, windows: Windows, burst: int) -> None:
        self.rate = rate
        self.windows = windows
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate > 0:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait(self) -> float:
        """Seconds until the next message may go (0: now): the link window, then
        the rate. A message then sent may overdraw the bucket (:meth:`spend`),
        which is how a sender serving many edges, each with its own budget,
        asks every one without waiting on any."""
        closed = seconds_to_window(self.windows, datetime.now(UTC))
        if closed > 0:
            return closed
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def spend(self, n: int) -> None:
        """``n`` bytes went out: the next message waits until the rate has paid for them."""
        if self.rate > 0:
            self._refill()
            self._tokens = min(self._tokens, 0.0) - n

    async def wait_window(self) -> None:
        while (wait := seconds_to_window(self.windows, datetime.now(UTC))) > 0:
            await asyncio.sleep(min(wait, 60.0))

    async def take(self, n: int) -> None:
        await self.wait_window()
        if self.rate <= 0:
            return
        self._refill()
        if self._tokens < n:
            await asyncio.sleep((n - self._tokens) / self.rate)
            self._refill()
        self._tokens -= n
