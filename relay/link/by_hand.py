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

File: ``SRTF``, a version byte, the number of fragments (uint16), then per
fragment its length (uint16) and the fragment as published on the link
(docs/link-protocol.md). Nothing else: no path, no clock, no metadata that
the signature does not cover.
"""

from __future__ import annotations

import struct

from relay.link.messages import MAX_FRAGMENT, MAX_PARTS, Fragment, LinkError, parse_down
from relay.link.transfer import OutgoingTransfer

MAGIC = b"SRTF"
VERSION = 1
HEADER = struct.Struct(">4sBH")  # magic, version, fragments
LENGTH = struct.Struct(">H")  # bytes of the fragment that follows (a fragment is at most 64 KiB here)
MAX_FILE_FRAGMENT = 0xFFFF


def max_file_bytes(max_bundle: int) -> int:
    """The largest transfer file a bundle of ``max_bundle`` bytes makes (its parts in
    the smallest fragments, their hashes and headers): larger files are refused unread."""
    parts = max_bundle // (340 - 13) + 2
    return HEADER.size + max_bundle + parts * (13 + LENGTH.size + 8) + 4096


def pack(transfer: OutgoingTransfer) -> bytes:
    """The file for ``transfer``: every fragment, manifest first."""
    out = [HEADER.pack(MAGIC, VERSION, transfer.count)]
    for i in range(transfer.count):
        data = transfer.fragment(i).pack()
        if len(data) > MAX_FILE_FRAGMENT:
            raise ValueError(f"fragment of {len(data)} bytes: a transfer file takes at most {MAX_FILE_FRAGMENT}")
        out += [LENGTH.pack(len(data)), data]
    return b"".join(out)


def unpack(data: bytes, max_fragment: int = MAX_FRAGMENT) -> list[Fragment]:
    """The fragments of a transfer file, each parsed as the link parses one
    (not yet authenticated). One transfer, whole: every part once, all of one
    bundle. Raises :class:`LinkError` with what is wrong."""
    if len(data) < HEADER.size:
        raise LinkError("file", "not a transfer file (too short)")
    magic, version, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise LinkError("file", "not a transfer file (`relay ground export` writes them)")
    if version != VERSION:
        raise LinkError("file", f"transfer file version {version}; this edge reads version {VERSION}")
    if not 1 <= count <= MAX_PARTS:
        raise LinkError("file", f"transfer file of {count} fragments")
    pos, fragments = HEADER.size, list[Fragment]()
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
    return fragments
