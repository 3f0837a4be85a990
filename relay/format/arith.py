"""Arithmetic coding on integers only, and the small adaptive models that feed it.

Format v2 codes everything after its short header as one arithmetic-coded
stream: each symbol costs -log2 of the probability the model gave it, so a
word the language model expected costs a few bits and a timing that matches
its prediction costs under one. Every probability here is an integer count
and every step an integer operation on Python's unbounded ints, so an x86
ground and an ARM edge agree bit for bit (a float rounding one way on one
machine and the other way on the other would desynchronise the decoder for
the rest of the bundle).

The coder is the classic one of Witten, Neal and Cleary (CACM 1987) with a
64-bit state. The encoder ends on the shortest tail that pins the interval
and drops trailing zero bytes: the decoder reads zeros past the end, but
only as far as a stream the encoder wrote can need (its 64-bit window and
the bits it dropped), so a cut or forged stream ends where its data does.
"""

from __future__ import annotations

from collections.abc import Sequence

PRECISION = 64
_FULL = (1 << PRECISION) - 1
_HALF = 1 << (PRECISION - 1)
_QUARTER = 1 << (PRECISION - 2)
MAX_TOTAL = 1 << 48  # a model's total must stay well under the quarter range


class ArithmeticEncoder:
    """Collects bits; :meth:`finish` returns the bytes."""

    def __init__(self) -> None:
        self._low = 0
        self._high = _FULL
        self._pending = 0
        self._bits: list[int] = []

    def encode(self, lo: int, hi: int, total: int) -> None:
        """Code the symbol that owns ``[lo, hi)`` of ``total``."""
        if not 0 <= lo < hi <= total <= MAX_TOTAL:
            raise ValueError(f"bad interval {lo}..{hi} of {total}")
        span = self._high - self._low + 1
        self._high = self._low + span * hi // total - 1
        self._low = self._low + span * lo // total
        while True:
            if self._high < _HALF:
                self._emit(0)
            elif self._low >= _HALF:
                self._emit(1)
                self._low -= _HALF
                self._high -= _HALF
            elif self._low >= _QUARTER and self._high < 3 * _QUARTER:
                self._pending += 1
                self._low -= _QUARTER
                self._high -= _QUARTER
            else:
                break
            self._low <<= 1
            self._high = (self._high << 1) | 1

    def _emit(self, bit: int) -> None:
        self._bits.append(bit)
        if self._pending:
            self._bits.extend([bit ^ 1] * self._pending)
            self._pending = 0

    def bits(self) -> int:
        """Bits committed so far (a lower bound on the final size; for costing)."""
        return len(self._bits) + self._pending

    def finish(self) -> bytes:
        self._pending += 1
        self._emit(0 if self._low < _QUARTER else 1)
        bits = self._bits
        while bits and bits[-1] == 0:
            bits.pop()
        out = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            if bit:
                out[i >> 3] |= 0x80 >> (i & 7)
        return bytes(out)


MAX_OVERRUN = 2 * PRECISION  # bits a decoder may read past the data: its window, and the zeros the encoder dropped


class ArithmeticDecoder:
    """Reads what an :class:`ArithmeticEncoder` wrote; past the end it reads zeros, at
    most :data:`MAX_OVERRUN` bits of them (then ``ValueError``: the data ended).

    ``max_steps`` bounds the symbols one stream may yield, so a hostile
    stream cannot keep a reader busy for ever (each reader also bounds what
    it allocates)."""

    def __init__(self, data: bytes, max_steps: int = 50_000_000) -> None:
        self._data = data
        self._pos = 0  # next bit
        self._low = 0
        self._high = _FULL
        self._value = 0
        self._steps = max_steps
        for _ in range(PRECISION):
            self._value = (self._value << 1) | self._bit()

    def _bit(self) -> int:
        pos = self._pos
        self._pos += 1
        if pos >> 3 >= len(self._data):
            if pos - 8 * len(self._data) >= MAX_OVERRUN:
                raise ValueError("the coded stream ends before its data does")
            return 0
        return (self._data[pos >> 3] >> (7 - (pos & 7))) & 1

    def overrun(self) -> int:
        """Bits read past the end of the data (a sane stream reads at most PRECISION)."""
        return max(0, self._pos - 8 * len(self._data))

    def target(self, total: int) -> int:
        """Where the next symbol falls in ``[0, total)``."""
        self._steps -= 1
        if self._steps < 0:
            raise ValueError("the coded stream runs on past any sane length")
        span = self._high - self._low + 1
        return ((self._value - self._low + 1) * total - 1) // span

    def consume(self, lo: int, hi: int, total: int) -> None:
        """Remove the symbol just found (same interval the encoder used)."""
        span = self._high - self._low + 1
        self._high = self._low + span * hi // total - 1
        self._low = self._low + span * lo // total
        while True:
            if self._high < _HALF:
                pass
            elif self._low >= _HALF:
                self._low -= _HALF
                self._high -= _HALF
                self._value -= _HALF
            elif self._low >= _QUARTER and self._high < 3 * _QUARTER:
                self._low -= _QUARTER
                self._high -= _QUARTER
                self._value -= _QUARTER
            else:
                break
            self._low <<= 1
            self._high = (self._high << 1) | 1
            self._value = (self._value << 1) | self._bit()


# --- models ------------------------------------------------------------------------------------


class Adaptive:
    """An adaptive frequency table over ``0 .. n-1``: each coded symbol gains
    ``step``, and all counts halve when the total passes ``limit``, so a
    model follows a speaker who changes pace. ``prior`` gives starting counts
    (every one at least 1)."""

    def __init__(self, n: int, prior: Sequence[int] | None = None, step: int = 24, limit: int = 1 << 13) -> None:
        counts = list(prior) if prior is not None else [1] * n
        if len(counts) != n or min(counts) < 1:
            raise ValueError("a prior needs one count of at least 1 per symbol")
        self.counts = counts
        self.step = step
        self.limit = limit

    def _update(self, symbol: int) -> None:
        self.counts[symbol] += self.step
        if sum(self.counts) > self.limit:
            self.counts = [(c + 1) // 2 for c in self.counts]

    def encode(self, enc: ArithmeticEncoder, symbol: int) -> None:
        lo = sum(self.counts[:symbol])
        enc.encode(lo, lo + self.counts[symbol], sum(self.counts))
        self._update(symbol)

    def decode(self, dec: ArithmeticDecoder) -> int:
        total = sum(self.counts)
        t = dec.target(total)
        lo = 0
        for symbol, count in enumerate(self.counts):
            if t < lo + count:
                dec.consume(lo, lo + count, total)
                self._update(symbol)
                return symbol
            lo += count
        raise ValueError("the coded stream is corrupt")  # unreachable for 0 <= t < total


class Bit(Adaptive):
    """An adaptive yes/no."""

    def __init__(self, p_one: float = 0.5) -> None:
        one = max(1, min(63, round(64 * p_one)))
        super().__init__(2, [64 - one, one], step=16, limit=1 << 10)


def put_raw(enc: ArithmeticEncoder, value: int, nbits: int) -> None:
    """``nbits`` bits, every value equally likely (ids, hashes, codec bytes)."""
    if not 0 <= value < 1 << nbits:
        raise ValueError(f"{value} does not fit in {nbits} bits")
    while nbits > 0:
        take = min(nbits, 32)
        nbits -= take
        part = (value >> nbits) & ((1 << take) - 1)
        enc.encode(part, part + 1, 1 << take)


def get_raw(dec: ArithmeticDecoder, nbits: int) -> int:
    value = 0
    while nbits > 0:
        take = min(nbits, 32)
        nbits -= take
        part = dec.target(1 << take)
        dec.consume(part, part + 1, 1 << take)
        value = (value << take) | part
    return value


def put_bytes(enc: ArithmeticEncoder, data: bytes) -> None:
    for byte in data:
        enc.encode(byte, byte + 1, 256)


def get_bytes(dec: ArithmeticDecoder, n: int) -> bytes:
    out = bytearray(n)
    for i in range(n):
        byte = dec.target(256)
        dec.consume(byte, byte + 1, 256)
        out[i] = byte
    return bytes(out)


class Count:
    """An unsigned integer of any size as Elias-gamma with adaptive bits: the
    number of bits first (in unary, each step its own adaptive bit), then the
    bits below the leading one (the top ``adaptive`` of them adaptive, the rest
    raw). Small values that recur cost well under their gamma length."""

    MAX_BITS = 62

    def __init__(self, adaptive: int = 3) -> None:
        self._length = [Bit(0.5) for _ in range(self.MAX_BITS + 1)]
        self._adaptive = adaptive
        self._mantissa: dict[tuple[int, int], Bit] = {}

    def encode(self, enc: ArithmeticEncoder, value: int) -> None:
        if not 0 <= value < 1 << self.MAX_BITS:
            raise ValueError(f"{value} is out of range for a count")
        v = value + 1
        n = v.bit_length() - 1
        for i in range(n):
            self._length[i].encode(enc, 1)
        if n < self.MAX_BITS:
            self._length[n].encode(enc, 0)
        prefix = 1
        for i in range(n - 1, -1, -1):
            bit = (v >> i) & 1
            if n - 1 - i < self._adaptive:
                self._mantissa_bit(n, prefix).encode(enc, bit)
                prefix = prefix << 1 | bit
            else:
                put_raw(enc, v & ((1 << (i + 1)) - 1), i + 1)
                break

    def decode(self, dec: ArithmeticDecoder) -> int:
        n = 0
        while n < self.MAX_BITS and self._length[n].decode(dec):
            n += 1
        v = 1
        for i in range(n - 1, -1, -1):
            if n - 1 - i < self._adaptive:
                v = v << 1 | self._mantissa_bit(n, v).decode(dec)
            else:
                v = v << (i + 1) | get_raw(dec, i + 1)
                break
        return v - 1

    def _mantissa_bit(self, n: int, prefix: int) -> Bit:
        key = (n, prefix)
        if key not in self._mantissa:
            self._mantissa[key] = Bit(0.5)
        return self._mantissa[key]


def zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2
