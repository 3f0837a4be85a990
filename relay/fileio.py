"""File reads and writes that fail with one clear line and never leave half a file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from relay.errors import RelayError


def read_bytes(path: str | Path, what: str = "file", max_bytes: int = 256 * 1024 * 1024) -> bytes:
    """A regular file's bytes, at most ``max_bytes`` of them, checked before
    reading: a 3 GB file, a link to /dev/zero or a FIFO is one line, not all
    of memory or a command that hangs."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise RelayError(f"{path}: not a regular file (a {what} is read from a file)")
        if info.st_size > max_bytes:
            raise RelayError(f"{path}: {info.st_size:,} bytes, over the {max_bytes:,} a {what} may have")
        with Path(path).open("rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # it grew since
            raise RelayError(f"{path}: over the {max_bytes:,} bytes a {what} may have")
        return data
    except FileNotFoundError:
        raise RelayError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RelayError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise RelayError(f"{path}: cannot read ({exc.strerror})") from None


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place, so a
    full disk or a crash leaves either the old file or the new one, never a
    truncated bundle that looks like corruption later."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise RelayError(f"{path}: cannot write ({exc.strerror or exc})") from None
