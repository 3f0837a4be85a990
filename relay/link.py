"""The link protocol, v2: what travels between ground and edge over MQTT.

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
  signed too, so a stranger cannot make an edge talk up the thin link;
* an **ack** (edge -> ground) says where a bundle stands: still missing
  these parts, delivered (stored and verified), rejected with a reason,
  unknown, played, or quarantined (cannot be played), signed with the
  edge's own key, so no one else can tell the ground a bundle arrived.

Parsing never trusts the input: every malformed message raises
:class:`LinkError` with a short reason, which the daemons count and log.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import msgpack

from relay.errors import RelayError
from relay.signing import SIGNATURE_SIZE, Keyring, SigningKey, VerifyKey

VERSION = 2
FRAGMENT_HEADER = struct.Struct(">B8sHH")  # version|kind, bundle id, index, count
MIN_FRAGMENT, MAX_FRAGMENT = 340, 256 * 1024  # an Iridium SBD message .. a comfortable MQTT payload
MAX_PARTS = 0xFFFF
MAX_MISSING_RANGES = 32  # an ack lists at most this many holes; the rest follow in later acks
MAX_ACK_PROFILES = 64
MAX_REASON = 300  # characters of a reason in an ack
PART_HASH = 8  # bytes of BLAKE2b per part: a second preimage costs 2**64 work
MANIFEST = struct.Struct(">BB8sIII16s")  # version, priority, key id, signed at, seq, bundle size, digest
MANIFEST_PART_SIZE = struct.Struct(">I")  # bytes of bundle per data part (follows MANIFEST)
MANIFEST_FIXED = MANIFEST.size + MANIFEST_PART_SIZE.size
POLL = struct.Struct(">B8sI8s64s")  # version|kind, bundle id, signed at, key id, signature
MANIFEST_CONTEXT = b"speech-relay manifest v2\0"
POLL_CONTEXT = b"speech-relay poll v2\0"
ACK_CONTEXT = b"speech-relay ack v2\0"


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


def part_hash(bundle_id: bytes, index: int, data: bytes) -> bytes:
    """The hash that authenticates part ``index`` of a transfer (bound to the bundle and the position)."""
    return hashlib.blake2b(bundle_id + index.to_bytes(2, "big") + data, digest_size=PART_HASH,
                           person=b"sr-part-v2").digest()


def bundle_digest(bundle: bytes) -> bytes:
    return hashlib.blake2b(bundle, digest_size=16, person=b"sr-bundle-v2").digest()


# --- the shape of a transfer ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything sits in a transfer of a ``size``-byte bundle in parts of ``part_size`` bytes.

    Part 0 is the manifest with the hashes of parts 1..``k0``; parts
    1..``heads`` are the rest of the hash list, ``k`` hashes each, in order;
    parts ``heads + 1`` .. ``count - 1`` are the bundle's bytes. Part ``i``'s
    hash is in block :meth:`block_of` (0: the manifest; b: part b), which is
    always an earlier part, so each part can be checked as soon as the one
    holding its hash has been.
    """

    size: int
    part_size: int
    k0: int
    k: int
    heads: int
    count: int

    @classmethod
    def of(cls, size: int, part_size: int) -> Layout:
        k0 = (part_size - MANIFEST_FIXED - SIGNATURE_SIZE) // PART_HASH
        k = part_size // PART_HASH
        if size < 1 or k0 < 1:
            raise LinkError("layout", f"cannot lay out {size} bytes in parts of {part_size}")
        data = -(-size // part_size)
        heads = 0 if data <= k0 else -(-(data - k0) // (k - 1))
        count = 1 + heads + data
        if count > MAX_PARTS:
            raise LinkError("layout", f"{size} bytes need {count} parts of {part_size} (at most {MAX_PARTS}); "
                                      "use a larger fragment size")
        return cls(size, part_size, k0, k, heads, count)

    def block_of(self, index: int) -> int:
        return 0 if index <= self.k0 else 1 + (index - self.k0 - 1) // self.k

    def block(self, b: int) -> range:
        """The part indices whose hashes block ``b`` holds."""
        if b == 0:
            return range(1, min(self.k0, self.count - 1) + 1)
        first = self.k0 + (b - 1) * self.k + 1
        return range(first, min(first + self.k, self.count))

    def data_range(self, index: int) -> tuple[int, int]:
        """The bundle bytes [start, end) that data part ``index`` carries."""
        m = index - 1 - self.heads
        return m * self.part_size, min((m + 1) * self.part_size, self.size)

    def is_data(self, index: int) -> bool:
        return index > self.heads


def payload_size(fragment_size: int) -> int:
    """Bytes of a part in a fragment of ``fragment_size`` bytes on the wire."""
    return fragment_size - FRAGMENT_HEADER.size


# --- the manifest ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """Part 0: what the transfer is, signed by the ground for one edge."""

    priority: Priority
    key_id: bytes
    signed_at: int  # unix seconds, the ground's clock, when the transfer was signed
    seq: int  # per-edge sequence number of the transfer
    size: int  # bundle bytes
    part_size: int
    digest: bytes  # BLAKE2b-128 of the bundle
    hashes: bytes  # PART_HASH bytes per part, parts 1..k0
    signature: bytes

    def body(self) -> bytes:
        return (MANIFEST.pack(VERSION, int(self.priority), self.key_id, self.signed_at, self.seq, self.size,
                              self.digest) + MANIFEST_PART_SIZE.pack(self.part_size) + self.hashes)

    def pack(self) -> bytes:
        return self.body() + self.signature

    @property
    def layout(self) -> Layout:
        return Layout.of(self.size, self.part_size)

    @staticmethod
    def signed_message(edge: str, bundle_id: bytes, count: int, body: bytes) -> bytes:
        return edge.encode() + b"\0" + bundle_id + count.to_bytes(2, "big") + body

    @classmethod
    def unpack(cls, data: bytes) -> Manifest:
        if len(data) < MANIFEST_FIXED + SIGNATURE_SIZE or (len(data) - MANIFEST_FIXED - SIGNATURE_SIZE) % PART_HASH:
            raise LinkError("manifest", f"manifest of {len(data)} bytes has the wrong length")
        version, prio, kid, signed_at, seq, size, digest = MANIFEST.unpack_from(data)
        (part_size,) = MANIFEST_PART_SIZE.unpack_from(data, MANIFEST.size)
        if version != VERSION:
            raise LinkError("version", f"manifest version {version} is not {VERSION}")
        if prio not in tuple(Priority):
            raise LinkError("manifest", f"manifest priority {prio} is unknown")
        return cls(Priority(prio), kid, signed_at, seq, size, part_size, digest,
                   data[MANIFEST_FIXED:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:])

    def check(self, keyring: Keyring, edge: str, bundle_id: bytes, count: int) -> None:
        """Raise :class:`LinkError` unless a trusted key signed this for ``edge`` and its shape adds up."""
        layout = self.layout
        if layout.count != count:
            raise LinkError("manifest", f"manifest lays out {layout.count} parts, the fragment says {count}")
        if len(self.hashes) != PART_HASH * len(layout.block(0)):
            raise LinkError("manifest", "manifest carries the wrong number of part hashes")
        reason = keyring.check(self.key_id, self.signature, MANIFEST_CONTEXT,
                               self.signed_message(edge, bundle_id, count, self.body()))
        if reason is not None:
            raise LinkError("signature", f"manifest {reason}")


# --- fragments ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fragment:
    bundle_id: bytes
    index: int
    count: int
    data: bytes

    def pack(self) -> bytes:
        return FRAGMENT_HEADER.pack(_head(Kind.PART), self.bundle_id, self.index, self.count) + self.data


@dataclass(slots=True)
class OutgoingTransfer:
    """One bundle on its way to one edge (the ground's side): the signed
    manifest and hash list, and every part on demand."""

    bundle_id: bytes
    bundle: bytes
    layout: Layout
    head: list[bytes]  # the manifest, then the rest of the hash list, one entry per part

    @classmethod
    def create(cls, bundle_id: bytes, bundle: bytes, edge: str, priority: Priority, fragment_size: int,
               key: SigningKey, seq: int, signed_at: int) -> OutgoingTransfer:
        if not MIN_FRAGMENT <= fragment_size <= MAX_FRAGMENT:
            raise ValueError(f"fragment size {fragment_size} outside {MIN_FRAGMENT}..{MAX_FRAGMENT}")
        layout = Layout.of(len(bundle), payload_size(fragment_size))
        hashes = [b""] * layout.count
        for i in range(layout.count - 1, layout.heads, -1):  # data parts first, then the hash parts
            a, b = layout.data_range(i)
            hashes[i] = part_hash(bundle_id, i, bundle[a:b])
        heads = [b""] * (layout.heads + 1)
        for b_ in range(layout.heads, 0, -1):  # later hash parts first: part b's hash lives in an earlier block
            heads[b_] = b"".join(hashes[i] for i in layout.block(b_))
            hashes[b_] = part_hash(bundle_id, b_, heads[b_])
        unsigned = Manifest(priority, key.public.key_id, signed_at, seq, len(bundle), layout.part_size,
                            bundle_digest(bundle), b"".join(hashes[i] for i in layout.block(0)), b"")
        _, signature = key.sign(MANIFEST_CONTEXT, Manifest.signed_message(edge, bundle_id, layout.count,
                                                                           unsigned.body()))
        heads[0] = unsigned.body() + signature
        return cls(bundle_id, bundle, layout, heads)

    @classmethod
    def resume(cls, bundle_id: bytes, bundle: bytes, head: bytes, fragment_size: int) -> OutgoingTransfer:
        """From what the ground stored after :meth:`create` (:meth:`head_blob`): no new signature."""
        layout = Layout.of(len(bundle), payload_size(fragment_size))
        first = MANIFEST_FIXED + PART_HASH * len(layout.block(0)) + SIGNATURE_SIZE
        parts, pos = [head[:first]], first
        for b in range(1, layout.heads + 1):
            n = PART_HASH * len(layout.block(b))
            parts.append(head[pos:pos + n])
            pos += n
        return cls(bundle_id, bundle, layout, parts)

    def head_blob(self) -> bytes:
        return b"".join(self.head)

    @property
    def count(self) -> int:
        return self.layout.count

    def part(self, index: int) -> bytes:
        if index <= self.layout.heads:
            return self.head[index]
        a, b = self.layout.data_range(index)
        return self.bundle[a:b]

    def fragment(self, index: int) -> Fragment:
        return Fragment(self.bundle_id, index, self.count, self.part(index))


class IncomingTransfer:
    """One bundle arriving (the edge's side), after its manifest was verified:
    which part hashes are known, and checking a part against its hash."""

    def __init__(self, bundle_id: bytes, manifest: Manifest) -> None:
        self.bundle_id = bundle_id
        self.manifest = manifest
        self.layout = manifest.layout
        self.hashes: list[bytes | None] = [None] * self.layout.count
        self._fill(0, manifest.hashes)

    def _fill(self, block: int, blob: bytes) -> None:
        for n, i in enumerate(self.layout.block(block)):
            self.hashes[i] = blob[n * PART_HASH:(n + 1) * PART_HASH]

    def known(self, index: int) -> bool:
        return 0 < index < self.layout.count and self.hashes[index] is not None

    def verify(self, index: int, data: bytes) -> bool:
        """True if ``data`` is part ``index`` (its hash must already be known)."""
        expected = self.hashes[index] if 0 < index < self.layout.count else None
        if expected is None:
            return False
        if self.layout.is_data(index):
            a, b = self.layout.data_range(index)
            if len(data) != b - a:
                return False
        elif len(data) != PART_HASH * len(self.layout.block(index)):
            return False
        return part_hash(self.bundle_id, index, data) == expected

    def learn(self, index: int, data: bytes) -> list[int]:
        """After part ``index`` was verified: the indices whose hashes it revealed."""
        if 0 < index <= self.layout.heads:
            self._fill(index, data)
            return list(self.layout.block(index))
        return []


# --- polls ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Poll:
    bundle_id: bytes
    signed_at: int
    key_id: bytes
    signature: bytes

    @classmethod
    def create(cls, bundle_id: bytes, edge: str, key: SigningKey, signed_at: int) -> Poll:
        kid, sig = key.sign(POLL_CONTEXT, cls._message(edge, bundle_id, signed_at))
        return cls(bundle_id, signed_at, kid, sig)

    @staticmethod
    def _message(edge: str, bundle_id: bytes, signed_at: int) -> bytes:
        return edge.encode() + b"\0" + bundle_id + signed_at.to_bytes(4, "big")

    def pack(self) -> bytes:
        return POLL.pack(_head(Kind.POLL), self.bundle_id, self.signed_at, self.key_id, self.signature)

    def check(self, keyring: Keyring, edge: str) -> None:
        reason = keyring.check(self.key_id, self.signature, POLL_CONTEXT,
                               self._message(edge, self.bundle_id, self.signed_at))
        if reason is not None:
            raise LinkError("signature", f"poll {reason}")


def parse_down(data: bytes, max_size: int = MAX_FRAGMENT) -> Fragment | Poll:
    """A message on an edge's data topic (not yet authenticated: see
    :meth:`Manifest.check`, :meth:`IncomingTransfer.verify`, :meth:`Poll.check`)."""
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
        _, bid, at, kid, sig = POLL.unpack(data)
        return Poll(bid, at, kid, sig)
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

    def missing_indices(self) -> set[int]:
        return {i for a, b in self.missing for i in range(a, b)}

    def body(self) -> bytes:
        return msgpack.packb([VERSION, self.bundle_id, int(self.state),
                              [list(r) for r in self.missing[:MAX_MISSING_RANGES]], self.reason[:MAX_REASON],
                              list(self.missing_profiles[:MAX_ACK_PROFILES]), int(self.code)])

    def pack(self, key: SigningKey, edge: str) -> bytes:
        """Signed with the edge's key: ``body || signature``."""
        body = self.body()
        _, sig = key.sign(ACK_CONTEXT, edge.encode() + b"\0" + body)
        return body + sig

    @classmethod
    def unpack(cls, data: bytes, key: VerifyKey, edge: str) -> Ack:
        """Verify ``edge``'s signature, then parse. Anything else is a :class:`LinkError`."""
        if not SIGNATURE_SIZE < len(data) <= 4096:
            raise LinkError("ack", f"ack of {len(data)} bytes has the wrong size")
        body, sig = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
        if not key.verify(sig, ACK_CONTEXT, edge.encode() + b"\0" + body):
            raise LinkError("signature", f"ack not signed by {edge}'s key: forged, or the edge has a new key")
        return cls.parse(body)

    @classmethod
    def parse(cls, body: bytes) -> Ack:
        try:
            doc = msgpack.unpackb(body, max_array_len=MAX_ACK_PROFILES + 8, max_bin_len=64,
                                  max_str_len=MAX_REASON * 4, max_map_len=0, max_ext_len=0)
        except Exception:  # msgpack raises several unrelated types on garbage
            raise LinkError("ack", "ack is not valid msgpack") from None
        if not (isinstance(doc, list) and len(doc) >= 7 and doc[0] == VERSION):
            raise LinkError("ack", "ack has the wrong shape or version")
        bid, state, missing, reason, profiles, code = doc[1:7]
        ok = (isinstance(bid, bytes) and len(bid) == 8 and state in tuple(AckState) and isinstance(reason, str)
              and isinstance(missing, list) and len(missing) <= MAX_MISSING_RANGES and isinstance(profiles, list)
              and len(profiles) <= MAX_ACK_PROFILES and code in tuple(RejectCode)
              and all(isinstance(p, bytes) and len(p) == 6 for p in profiles)
              and all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) for r in missing))
        if not ok:
            raise LinkError("ack", "ack fields have the wrong types")
        holes = tuple((a, b) for a, b in missing)
        if any(not 0 <= a < b <= MAX_PARTS for a, b in holes):
            raise LinkError("ack", "ack missing ranges out of bounds")
        return cls(bid, AckState(state), holes, reason[:MAX_REASON], tuple(profiles), RejectCode(code))


def topics(prefix: str, edge: str) -> tuple[str, str]:
    """(data topic, ack topic) of one edge. Short, because every fragment carries its topic."""
    return f"{prefix}/{edge}/d", f"{prefix}/{edge}/a"
