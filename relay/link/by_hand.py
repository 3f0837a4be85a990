"""Bundles by hand: one signed transfer in one file, for a USB stick.

When the link is down for days, an operator carries bundles instead. The
file holds exactly what the link would have carried to that edge: the
transfer's signed manifest (part 0), its hash parts and its data parts, each
as the fragment the ground would publish. So an import at the edge goes
through the same checks as a reception (:mod:`edge.by_hand` hands each part to
:class:`relay.link.receiver.Receiver`:
the ground's signature over the edge's name, freshness, the edge's limits,
every part against its signed hash, the bundle's digest and decoding) and
is stored exactly as if it had been received; a bundle the edge already
holds, by the link or an earlier import, is left alone.

The ground exports the transfer it already signed for an entry that has
started sending (the same manifest, so the edge sees one transfer), or signs
one for the file otherwise, with the entry's fragment size.

File (version 2): ``SRTF``, a version byte, the edge it is for (a length
byte and the name), the number of fragments (uint16), then per fragment its
length (uint16) and the fragment as published on the link
(docs/link-protocol.md), and last a BLAKE2b-128 checksum of everything
before it. The checksum tells a copy damaged on the stick from a forgery
before anything is parsed, and a damaged copy of a bundle the edge already
holds is refused, not "already here". The name only words the refusal of a
file carried to the wrong ship ("signed for ship2; this is ship1"): the
signature, which covers the edge's name, is what decides. Version 1 (no
name, no checksum) is still read.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from relay.link.messages import MAX_FRAGMENT, MAX_PARTS, Fragment, LinkError, parse_down
from relay.link.transfer import OutgoingTransfer

MAGIC = b"SRTF"
VERSION = 2
HEADER = struct.Struct(">4sBH")  # version 1: magic, version, fragments
START = struct.Struct(">4sB")  # magic, version
COUNT = struct.Struct(">H")
LENGTH = struct.Struct(">H")  # bytes of the fragment that follows (a fragment is at most 64 KiB here)
DIGEST = 16
MAX_FILE_FRAGMENT = 0xFFFF


@dataclass(frozen=True, slots=True)
class TransferFile:
    """A transfer file read: the edge it says it is for (None in version 1) and its fragments."""

    edge: str | None
    fragments: list[Fragment]


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


def max_file_bytes(max_bundle: int) -> int:
    """The largest transfer file a bundle of ``max_bundle`` bytes makes (its parts in
    the smallest fragments, their hashes and headers): larger files are refused unread."""
    parts = max_bundle // (340 - 13) + 2
    return HEADER.size + 33 + max_bundle + parts * (13 + LENGTH.size + 8) + 4096 + DIGEST


def pack(transfer: OutgoingTransfer, edge: str) -> bytes:
    """The file for ``transfer``, signed for ``edge``: every fragment, manifest first, then the checksum."""
    name = edge.encode()
    if not 1 <= len(name) <= 32:
        raise ValueError(f"edge name {edge!r}: 1 to 32 bytes")
    out = [START.pack(MAGIC, VERSION), bytes([len(name)]), name, COUNT.pack(transfer.count)]
    for i in range(transfer.count):
        data = transfer.fragment(i).pack()
        if len(data) > MAX_FILE_FRAGMENT:
            raise ValueError(f"fragment of {len(data)} bytes: a transfer file takes at most {MAX_FILE_FRAGMENT}")
        out += [LENGTH.pack(len(data)), data]
    body = b"".join(out)
    return body + _checksum(body)


def unpack(data: bytes, max_fragment: int = MAX_FRAGMENT) -> list[Fragment]:
    """The fragments of a transfer file (:func:`read`)."""
    return read(data, max_fragment).fragments


def read(data: bytes, max_fragment: int = MAX_FRAGMENT) -> TransferFile:
    """A transfer file, each fragment parsed as the link parses one (not yet
    authenticated). One transfer, whole: every part once, all of one bundle.
    Raises :class:`LinkError` with what is wrong; a damaged copy says so,
    before anything in it is believed."""
    if len(data) < HEADER.size:
        raise LinkError("file", "not a transfer file (too short)")
    magic, version = START.unpack_from(data)
    if magic != MAGIC:
        raise LinkError("file", "not a transfer file (`relay ground export` writes them)")
    edge: str | None = None
    if version == 2:
        if len(data) < START.size + 1 + COUNT.size + DIGEST or _checksum(data[:-DIGEST]) != data[-DIGEST:]:
            raise LinkError("damaged", "the transfer file is damaged (its checksum does not match): copy it again "
                                       "from the ground, or export it again")
        data = data[:-DIGEST]
        n = data[START.size]
        try:
            edge = data[START.size + 1:START.size + 1 + n].decode()
        except UnicodeDecodeError:
            raise LinkError("file", "the transfer file's edge name is not text") from None
        pos = START.size + 1 + n
        if pos + COUNT.size > len(data):
            raise LinkError("file", "transfer file cut short in its header")
        (count,) = COUNT.unpack_from(data, pos)
        pos += COUNT.size
    elif version == 1:
        (count,) = COUNT.unpack_from(data, START.size)
        pos = HEADER.size
    else:
        raise LinkError("file", f"transfer file version {version}; this edge reads versions 1 and {VERSION}")
    if not 1 <= count <= MAX_PARTS:
        raise LinkError("file", f"transfer file of {count} fragments")
    fragments = list[Fragment]()
    for _ in range(count):
        if pos + LENGTH.size > len(data):
            raise LinkError("file", f"transfer file cut short after {len(fragments)} of {count} fragments")
        (n,) = LENGTH.unpack_from(data, pos)
        pos += LENGTH.size
        if pos + n > len(data):
            raise LinkError("file", f"transfer file cut short in fragment {len(fragments)} of {count}")
        if n > max_fragment:
            raise LinkError("file", f"fragment {len(fragments)} of {n} bytes is over this edge's max_fragment "
                                    f"({max_fragment})")
        msg = parse_down(data[pos:pos + n], max_fragment)
        pos += n
        if not isinstance(msg, Fragment):
            raise LinkError("file", "a transfer file holds fragments only")
        fragments.append(msg)
    if pos != len(data):
        raise LinkError("file", f"{len(data) - pos} bytes after the last fragment")
    first = fragments[0]
    if any(f.bundle_id != first.bundle_id or f.count != count for f in fragments):
        raise LinkError("file", "fragments of more than one transfer")
    if sorted(f.index for f in fragments) != list(range(count)):
        raise LinkError("file", "a part is missing or given twice")
    return TransferFile(edge, fragments)
