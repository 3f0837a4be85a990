"""The link protocol, v2: the messages that travel between ground and edge over MQTT.

Specified in docs/link-protocol.md. Anyone who can publish on the broker may
send anything, so every message is checked before it is stored or allocated
for, and nothing unauthenticated can displace what is real:

* a bundle travels as one **transfer** of ``count`` parts, each in one
  **fragment** (a 13-byte header: kind, bundle id, index, count). Part 0 is
  the **manifest**: the bundle's size, priority, the ground's signing time and
  per-edge sequence number, its digest, and a hash for every other part (as
  many as fit; the rest follow in the next parts, each verified by a hash
  already known, as in Reticulum's Resource hashmap), all signed with the
  ground's Ed25519 key over the edge's name. So an edge checks each part
  against its hash *before* storing it: a forged part is dropped, never kept
  in place of the real one;
* a **poll** (ground -> edge) asks for an ack when one is overdue; it is
  signed too, and names its transfer, so a stranger cannot make an edge talk
  up the thin link;
* an **ack** (edge -> ground) says where a bundle stands: still missing
  these parts, delivered (stored and verified), rejected with a reason,
  unknown, played, or quarantined (cannot be played), signed with the
  edge's own key, so no one else can tell the ground a bundle arrived. It
  names the transfer it answers and carries the edge's ack counter, which
  only grows, and its clock: a genuine ack captured and sent again later is
  older than what the ground has applied, and ignored.

Parsing never trusts the input: every malformed message raises
:class:`LinkError` with a short reason, which the daemons count and log.
The transfer (the manifest, the hash list, the parts) is :mod:`relay.link.transfer`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import IntEnum

import msgpack

from relay.errors import RelayError
from relay.link.signing import SIGNATURE_SIZE, Keyring, SigningKey, VerifyKey

VERSION = 2
FRAGMENT_HEADER = struct.Struct(">B8sHH")  # version|kind, bundle id, index, count
MIN_FRAGMENT, MAX_FRAGMENT = 340, 256 * 1024  # an Iridium SBD message .. a comfortable MQTT payload
MAX_PARTS = 0xFFFF
MAX_MISSING_RANGES = 32  # an ack lists at most this many holes; the rest follow in later acks
MAX_ACK_PROFILES = 64
MAX_REASON = 300  # characters of a reason in an ack
POLL = struct.Struct(">B8sII8s64s")  # version|kind, bundle id, signed at, transfer seq, key id, signature
POLL_CONTEXT = b"speech-relay poll v2.1\0"
ACK_CONTEXT = b"speech-relay ack v3\0"
ACK_VERSION = 3  # v3: the transfer's seq, the edge's counter and clock, not_before (v2 had none)
U32 = 0xFFFFFFFF


class Kind(IntEnum):
    PART = 0
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
    ACCEPTED = 1  # delivered: verified and stored; it will be played
    REJECTED = 2  # ``reason`` says why; ``code`` says whether a fresh signature helps
    UNKNOWN = 3  # the edge holds nothing of this bundle (answer to a poll)
    PLAYED = 4  # spoken (a play report; implies accepted)
    QUARANTINED = 5  # accepted but cannot be played: ``reason``


class RejectCode(IntEnum):
    BAD = 0  # the bundle itself is unusable: resending it will not help
    STALE = 1  # signed too long ago, or before the edge's store began: sign it afresh and resend


class LinkError(RelayError):
    """A link message that cannot be parsed or verified. ``reason`` is a short tag for counting."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def _head(kind: Kind) -> int:
    return VERSION << 4 | kind


# --- fragments ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    bundle_id: bytes
    index: int
    count: int
    data: bytes

    def pack(self) -> bytes:
        return FRAGMENT_HEADER.pack(_head(Kind.PART), self.bundle_id, self.index, self.count) + self.data


# --- polls ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Poll:
    bundle_id: bytes
    signed_at: int
    seq: int  # the transfer asked about (its manifest's sequence number)
    key_id: bytes
    signature: bytes

    @classmethod
    def create(cls, bundle_id: bytes, edge: str, key: SigningKey, signed_at: int, seq: int = 0) -> Poll:
        kid, sig = key.sign(POLL_CONTEXT, cls._message(edge, bundle_id, signed_at, seq))
        return cls(bundle_id, signed_at, seq, kid, sig)

    @staticmethod
    def _message(edge: str, bundle_id: bytes, signed_at: int, seq: int) -> bytes:
        return edge.encode() + b"\0" + bundle_id + signed_at.to_bytes(4, "big") + seq.to_bytes(4, "big")

    def pack(self) -> bytes:
        return POLL.pack(_head(Kind.POLL), self.bundle_id, self.signed_at, self.seq, self.key_id, self.signature)

    def check(self, keyring: Keyring, edge: str) -> None:
        reason = keyring.check(self.key_id, self.signature, POLL_CONTEXT,
                               self._message(edge, self.bundle_id, self.signed_at, self.seq))
        if reason is not None:
            raise LinkError("signature", f"poll {reason}")


def parse_down(data: bytes, max_size: int = MAX_FRAGMENT) -> Fragment | Poll:
    """A message on an edge's data topic (not yet authenticated: see
    :mod:`relay.link.transfer` for parts, :meth:`Poll.check` for polls)."""
    if len(data) > max_size:
        raise LinkError("size", f"message of {len(data)} bytes is over the limit of {max_size}")
    if len(data) < 1:
        raise LinkError("short", "empty message")
    head = data[0]
    if head >> 4 != VERSION:
        raise LinkError("version", f"link version {head >> 4} is not {VERSION}")
    kind = head & 0x0F
    if kind == Kind.POLL:
        if len(data) != POLL.size:
            raise LinkError("short", f"poll of {len(data)} bytes (expected {POLL.size})")
        _, bid, at, seq, kid, sig = POLL.unpack(data)
        return Poll(bid, at, seq, kid, sig)
    if kind != Kind.PART:
        raise LinkError("kind", f"unknown message kind {kind}")
    if len(data) < FRAGMENT_HEADER.size:
        raise LinkError("short", "fragment header truncated")
    _, bid, index, count = FRAGMENT_HEADER.unpack_from(data)
    if count < 2 or index >= count:
        raise LinkError("index", f"fragment {index} of {count}")
    return Fragment(bid, index, count, data[FRAGMENT_HEADER.size:])


# --- acks -----------------------------------------------------------------------------------------


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
    reason: str = ""  # REJECTED and QUARANTINED
    missing_profiles: tuple[bytes, ...] = field(default=())  # profile ids the edge never received
    code: RejectCode = RejectCode.BAD  # REJECTED only
    seq: int = 0  # the transfer it answers (its manifest's, or the poll's, sequence number); 0: none known
    not_before: int = 0  # REJECTED stale: sign again no earlier than this (unix s, the edge's clock)
    counter: int = 0  # set when signed: the edge's ack counter, which only grows
    at: int = 0  # set when signed: the edge's clock, unix s

    def missing_indices(self) -> set[int]:
        return {i for a, b in self.missing for i in range(a, b)}

    def key(self) -> tuple:
        """What it says, without when it was said (the edge sends the same answer at most once per interval)."""
        return (self.bundle_id, self.state, self.missing[:MAX_MISSING_RANGES], self.reason[:MAX_REASON],
                self.missing_profiles[:MAX_ACK_PROFILES], self.code, self.seq, self.not_before)

    def body(self) -> bytes:
        return msgpack.packb([ACK_VERSION, self.bundle_id, int(self.state),
                              [list(r) for r in self.missing[:MAX_MISSING_RANGES]], self.reason[:MAX_REASON],
                              list(self.missing_profiles[:MAX_ACK_PROFILES]), int(self.code), self.seq,
                              self.not_before, self.counter, self.at])

    def pack(self, key: SigningKey, edge: str, counter: int | None = None, at: int | None = None) -> bytes:
        """Signed with the edge's key: ``body || signature``, stamped with ``counter``
        (the edge's next ack number) and ``at`` (default: now)."""
        import time

        stamped = replace(self, counter=self.counter if counter is None else counter,
                          at=int(time.time()) if at is None else at)
        body = stamped.body()
        _, sig = key.sign(ACK_CONTEXT, edge.encode() + b"\0" + body)
        return body + sig

    @classmethod
    def unpack(cls, data: bytes, key: VerifyKey, edge: str) -> Ack:
        """Verify ``edge``'s signature, then parse. Anything else is a :class:`LinkError`."""
        if not SIGNATURE_SIZE < len(data) <= 4096:
            raise LinkError("ack", f"ack of {len(data)} bytes has the wrong size")
        body, sig = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
        if not key.verify(sig, ACK_CONTEXT, edge.encode() + b"\0" + body):
            raise LinkError("signature", f"ack not signed by {edge}'s key: forged, an older edge, or the edge has "
                                         "a new key")
        return cls.parse(body)

    @classmethod
    def parse(cls, body: bytes) -> Ack:
        try:
            doc = msgpack.unpackb(body, max_array_len=MAX_ACK_PROFILES + 12, max_bin_len=64,
                                  max_str_len=MAX_REASON * 4, max_map_len=0, max_ext_len=0)
        except Exception:  # msgpack raises several unrelated types on garbage
            raise LinkError("ack", "ack is not valid msgpack") from None
        if not (isinstance(doc, list) and len(doc) >= 11 and doc[0] == ACK_VERSION):
            raise LinkError("ack", "ack has the wrong shape or version")
        bid, state, missing, reason, profiles, code, seq, not_before, counter, at = doc[1:11]
        ok = (isinstance(bid, bytes) and len(bid) == 8 and state in tuple(AckState) and isinstance(reason, str)
              and isinstance(missing, list) and len(missing) <= MAX_MISSING_RANGES and isinstance(profiles, list)
              and len(profiles) <= MAX_ACK_PROFILES and code in tuple(RejectCode)
              and all(isinstance(p, bytes) and len(p) == 6 for p in profiles)
              and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) for r in missing)
              and all(isinstance(x, int) and not isinstance(x, bool) for x in (seq, not_before, counter, at)))
        if not ok:
            raise LinkError("ack", "ack fields have the wrong types")
        if not (0 <= seq <= U32 and 0 <= not_before <= U32 and 0 <= at <= U32 and 0 <= counter < 2**63):
            raise LinkError("ack", "ack numbers out of range")
        holes = tuple((a, b) for a, b in missing)
        if any(not 0 <= a < b <= MAX_PARTS for a, b in holes):
            raise LinkError("ack", "ack missing ranges out of bounds")
        return cls(bid, AckState(state), holes, reason[:MAX_REASON], tuple(profiles), RejectCode(code), seq,
                   not_before, counter, at)


def topics(prefix: str, edge: str) -> tuple[str, str]:
    """(data topic, ack topic) of one edge. Short, because every fragment carries its topic."""
    return f"{prefix}/{edge}/d", f"{prefix}/{edge}/a"
