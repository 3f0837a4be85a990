"""One bundle's transfer, both directions: how it is laid out in parts, the
signed manifest, and the state each end keeps (one object per transfer, as
Reticulum's Resource).

Part 0 is the **manifest**: the bundle's size, priority, the ground's signing
time and per-edge sequence number, its digest, and a hash for every other
part (as many as fit; the rest follow in the next parts, each verified by a
hash already known), all signed with the ground's Ed25519 key over the
edge's name. So an edge checks each part against its hash *before* storing
it: a forged part is dropped, never kept in place of the real one.
:class:`OutgoingTransfer` is the ground's side (every part on demand),
:class:`IncomingTransfer` the edge's (which hashes are known, is this part
real). docs/link-protocol.md has the bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from relay.link.messages import (
    FRAGMENT_HEADER,
    MAX_FRAGMENT,
    MAX_PARTS,
    MIN_FRAGMENT,
    VERSION,
    Fragment,
    LinkError,
    Priority,
)
from relay.link.signing import SIGNATURE_SIZE, Keyring, SigningKey

PART_HASH = 8  # bytes of BLAKE2b per part: a second preimage costs 2**64 work
MANIFEST = struct.Struct(">BB8sIII16s")  # version, priority, key id, signed at, seq, bundle size, digest
MANIFEST_PART_SIZE = struct.Struct(">I")  # bytes of bundle per data part (follows MANIFEST)
MANIFEST_FIXED = MANIFEST.size + MANIFEST_PART_SIZE.size
MANIFEST_CONTEXT = b"speech-relay manifest v2\0"


def payload_size(fragment_size: int) -> int:
    """Bytes of a part in a fragment of ``fragment_size`` bytes on the wire."""
    return fragment_size - FRAGMENT_HEADER.size


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
    hash is in block 0 (the manifest) if ``i <= k0``, else in part
    ``1 + (i - k0 - 1) // k`` (:meth:`block` lists a block's parts), which is
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


