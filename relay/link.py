"""The link protocol: what travels between ground and edge over MQTT.

Specified in docs/link-protocol.md. Three messages:

* an **envelope** wraps one bundle for one edge: priority, the signing key's
  id and the Ed25519 signature (see :mod:`relay.signing`), then the bundle
  bytes. It is what gets fragmented;
* a **fragment** (ground -> edge) carries a slice of an envelope behind a
  13-byte header: kind, bundle id, index, count. Any fragment can start a
  reassembly; duplicates and any arrival order are fine;
* an **ack** (edge -> ground) says, end to end, where a bundle stands:
  accepted, rejected with a reason, or still missing these fragment ranges,
  so the ground resends only the holes; it can also name voice profiles the
  edge has never received;
* a **poll** (ground -> edge, 9 bytes) asks for an ack when one is overdue.

Parsing never trusts the input: every malformed message raises
:class:`LinkError` with a reason, which the daemons log and count.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum

import msgpack

from relay.errors import RelayError

VERSION = 1
FRAGMENT_HEADER = struct.Struct(">B8sHH")  # kind|version, bundle id, index, count
POLL = struct.Struct(">B8s")
MIN_FRAGMENT, MAX_FRAGMENT = 340, 256 * 1024  # an Iridium SBD message .. a comfortable MQTT payload
MAX_MISSING_RANGES = 32  # an ack lists at most this many holes; the rest follow in later acks


class Kind(IntEnum):
    FRAGMENT = 0
    POLL = 1


class Priority(IntEnum):
    """Lower sends first. Flash overtakes anything at the next fragment."""

    FLASH = 0
    PRIORITY = 1
    NORMAL = 2
    BULK = 3

    @classmethod
    def parse(cls, text: str) -> Priority:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in cls)
            raise LinkError("priority", f"unknown priority {text!r} (one of {names})") from None


class AckState(IntEnum):
    INCOMPLETE = 0  # ``missing`` lists the holes
    ACCEPTED = 1  # verified and stored; it will be played once
    REJECTED = 2  # ``reason`` says why; resending will not help
    UNKNOWN = 3  # the edge holds nothing of this bundle (answer to a poll)


class LinkError(RelayError):
    """A link message that cannot be parsed. ``reason`` is a short tag for counting."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _head(kind: Kind) -> int:
    return VERSION << 4 | kind


# --- envelope -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    priority: Priority
    key_id: bytes  # 8 bytes; zeros when unsigned
    signature: bytes  # 64 bytes; empty when unsigned
    bundle: bytes

    def pack(self) -> bytes:
        return msgpack.packb([VERSION, int(self.priority), self.key_id, self.signature, self.bundle])

    @classmethod
    def unpack(cls, data: bytes) -> Envelope:
        try:
            doc = msgpack.unpackb(data)
        except Exception:  # msgpack raises several unrelated types on garbage
            raise LinkError("envelope", "envelope is not valid msgpack") from None
        if not (isinstance(doc, list) and len(doc) == 5 and doc[0] == VERSION):
            raise LinkError("envelope", "envelope has the wrong shape or version")
        _, priority, kid, sig, bundle = doc
        if not (isinstance(kid, bytes) and len(kid) == 8 and isinstance(sig, bytes) and isinstance(bundle, bytes)):
            raise LinkError("envelope", "envelope fields have the wrong types")
        if priority not in tuple(Priority):
            raise LinkError("envelope", f"envelope priority {priority!r} is unknown")
        return cls(Priority(priority), kid, sig, bundle)


# --- fragments ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    bundle_id: bytes
    index: int
    count: int
    data: bytes

    def pack(self) -> bytes:
        return FRAGMENT_HEADER.pack(_head(Kind.FRAGMENT), self.bundle_id, self.index, self.count) + self.data


def payload_size(fragment_size: int) -> int:
    """Envelope bytes per fragment of ``fragment_size`` bytes on the wire."""
    return fragment_size - FRAGMENT_HEADER.size


def fragment_count(envelope_size: int, fragment_size: int) -> int:
    return max(1, -(-envelope_size // payload_size(fragment_size)))


def fragment(
    bundle_id: bytes, envelope: bytes, fragment_size: int, indices: Iterable[int] | None = None
) -> Iterator[Fragment]:
    """The fragments of ``envelope`` (all, or those at ``indices``)."""
    if not MIN_FRAGMENT <= fragment_size <= MAX_FRAGMENT:
        raise ValueError(f"fragment size {fragment_size} outside {MIN_FRAGMENT}..{MAX_FRAGMENT}")
    step = payload_size(fragment_size)
    count = fragment_count(len(envelope), fragment_size)
    if count > 0xFFFF:
        raise ValueError(f"envelope of {len(envelope)} bytes needs {count} fragments of {fragment_size} (max 65535)")
    for i in range(count) if indices is None else indices:
        yield Fragment(bundle_id, i, count, envelope[i * step : (i + 1) * step])


@dataclass(frozen=True, slots=True)
class Poll:
    bundle_id: bytes

    def pack(self) -> bytes:
        return POLL.pack(_head(Kind.POLL), self.bundle_id)


def parse_down(data: bytes) -> Fragment | Poll:
    """A message on an edge's data topic."""
    if len(data) < POLL.size:
        raise LinkError("short", f"message of {len(data)} bytes is too short")
    head = data[0]
    if head >> 4 != VERSION:
        raise LinkError("version", f"link version {head >> 4} is not {VERSION}")
    kind = head & 0x0F
    if kind == Kind.POLL:
        return Poll(data[1:9])
    if kind != Kind.FRAGMENT:
        raise LinkError("kind", f"unknown message kind {kind}")
    if len(data) < FRAGMENT_HEADER.size:
        raise LinkError("short", "fragment header truncated")
    _, bid, index, count = FRAGMENT_HEADER.unpack_from(data)
    if count == 0 or index >= count:
        raise LinkError("index", f"fragment {index} of {count}")
    return Fragment(bid, index, count, data[FRAGMENT_HEADER.size :])


# --- acks ---------------------------------------------------------------------------------------


def ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted indices as [start, end) ranges."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return [(a, b) for a, b in out]


@dataclass(frozen=True, slots=True)
class Ack:
    bundle_id: bytes
    state: AckState
    missing: tuple[tuple[int, int], ...] = ()  # [start, end) ranges, INCOMPLETE only
    reason: str = ""  # REJECTED only
    missing_profiles: tuple[bytes, ...] = field(default=())  # profile ids the edge never received

    def missing_indices(self) -> set[int]:
        return {i for a, b in self.missing for i in range(a, b)}

    def pack(self) -> bytes:
        doc = [VERSION, self.bundle_id, int(self.state), [list(r) for r in self.missing[:MAX_MISSING_RANGES]],
               self.reason]
        if self.missing_profiles:
            doc.append(list(self.missing_profiles))
        return msgpack.packb(doc)

    @classmethod
    def unpack(cls, data: bytes) -> Ack:
        try:
            doc = msgpack.unpackb(data)
        except Exception:
            raise LinkError("ack", "ack is not valid msgpack") from None
        if not (isinstance(doc, list) and len(doc) in (5, 6) and doc[0] == VERSION):
            raise LinkError("ack", "ack has the wrong shape or version")
        try:
            bid, state, missing, reason = doc[1], AckState(doc[2]), doc[3], doc[4]
            holes = tuple((int(a), int(b)) for a, b in missing)
            profiles = tuple(bytes(p) for p in (doc[5] if len(doc) == 6 else ()))
        except (ValueError, TypeError):
            raise LinkError("ack", "ack fields have the wrong types") from None
        if not (isinstance(bid, bytes) and len(bid) == 8 and isinstance(reason, str)):
            raise LinkError("ack", "ack fields have the wrong types")
        if any(not 0 <= a < b <= 0xFFFF for a, b in holes):
            raise LinkError("ack", "ack missing ranges out of bounds")
        return cls(bid, state, holes, reason, profiles)


def topics(prefix: str, edge: str) -> tuple[str, str]:
    """(data topic, ack topic) of one edge. Short, because every fragment carries its topic."""
    return f"{prefix}/{edge}/d", f"{prefix}/{edge}/a"
