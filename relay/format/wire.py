"""The bundle's bytes: write format v2, read v1 and v2.

Format v2 (:mod:`relay.format.v2`) codes text under Whisper's decoder as a
language model and timings against predictions, about half the bits of v1;
format v1 (:mod:`relay.format.v1`, msgpack and zstd) is still read, so
bundles queued or stored before the upgrade stay playable, and still
written on request (``version=1``) for an edge that has not been upgraded.
``docs/bundle-format.md`` specifies both.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

from relay.errors import BundleError
from relay.format import v1, v2
from relay.format.bundle import Bundle
from relay.format.limits import DEFAULT_LIMITS, DecodeAbandoned, DecodeBudget, LimitExceeded, Limits

VERSIONS = (1, 2)
DEFAULT_VERSION = 2
CACHE_UNDER = 64 * 1024  # bundles up to this size are kept decoded (CACHE_ENTRIES at most)
CACHE_ENTRIES = 16


def encode_bundle(bundle: Bundle, version: int = DEFAULT_VERSION) -> bytes:
    """Pack a bundle into bytes (format v2 unless asked for v1)."""
    if version == 1:
        return v1.encode_bundle(bundle)
    if version != 2:
        raise ValueError(f"bundle format version {version} is not one of {VERSIONS}")
    return v2.encode(bundle)[0]


def version_of(data: bytes) -> int:
    """1 or 2 from the magic bytes; 0 when neither."""
    if len(data) > 1 and data[0] == v2.MAGIC[0] and 2 <= data[1] < v1.MAGIC[1]:
        return 2  # 89 02 ..: v2, the second byte naming the text model
    return 1 if data[:3] == v1.MAGIC else 0


def decode_bundle(data: bytes, source: str | None = None, limits: Limits = DEFAULT_LIMITS,
                  budget: DecodeBudget | None = None) -> Bundle:
    """Unpack bytes into a :class:`Bundle`; any defect, and anything beyond
    ``limits``, raises :class:`BundleError` (reason ``limits`` for the latter)
    before memory is allocated for it. Decoding runs within ``budget`` (by
    default the CPU time ``limits`` give a bundle of this size), and raises
    :class:`DecodeAbandoned` if the budget's owner cancels it."""
    if version_of(data) != 2:
        return v1.decode_bundle(data, source, limits)
    if len(data) > limits.max_bundle_bytes:
        raise BundleError("limits", f"bundle of {len(data)} bytes is over the limit of {limits.max_bundle_bytes}",
                          source)
    v2.read_header(data, source)
    from relay.format.textmodel import TextModelMissing

    data = bytes(data)
    with _lock:
        cached = _decoded.get((data, limits))
        if cached is not None:
            _decoded.move_to_end((data, limits))
    if cached is not None:
        return copy.deepcopy(cached)
    budget = (budget or DecodeBudget.of(limits, len(data))).begin()
    try:
        bundle = v2.decode(data, limits, budget)
    except (BundleError, DecodeAbandoned) as exc:
        if isinstance(exc, DecodeAbandoned):
            raise
        raise BundleError(exc.reason, str(exc), source) from None
    except TextModelMissing as exc:
        raise BundleError("dictionary", f"this relay cannot read format v2: {exc}", source) from None
    except LimitExceeded as exc:
        raise BundleError("limits", str(exc), source) from None
    except Exception as exc:  # any malformation of the coded stream is a bad bundle
        raise BundleError("body", f"malformed or corrupted bundle ({exc.__class__.__name__}: {exc})",
                          source) from None
    if len(data) <= CACHE_UNDER:  # mostly coded audio above: quick to read and big to keep
        with _lock:
            _decoded[(data, limits)] = copy.deepcopy(bundle)
            while len(_decoded) > CACHE_ENTRIES:
                _decoded.popitem(last=False)
    return bundle


# The edge reads a bundle when it arrives, when it plays and when a page shows
# it; decoding text is the slow part (10-40 ms a token), so the last few
# decoded are kept (callers get a copy; an abandoned or failed decode is not kept).
_decoded: OrderedDict[tuple[bytes, Limits], Bundle] = OrderedDict()
_lock = threading.Lock()


def field_bits(bundle: Bundle, version: int = DEFAULT_VERSION) -> dict[str, int]:
    """Bits each part of the bundle costs on the wire; they add up to the
    bundle's size (``flush``: the coder's last bits and the byte it ends in)."""
    if version == 1:
        return {k: 8 * v for k, v in v1.field_costs(bundle).items() if k != "body_total"}
    return v2.encode(bundle)[1]


def field_costs(bundle: Bundle, version: int = DEFAULT_VERSION) -> dict[str, float]:
    """:func:`field_bits` in bytes (fractions of a byte where a part costs them)."""
    return {k: v / 8 for k, v in field_bits(bundle, version).items()}
