"""Import torchaudio on machines where its C++ extension cannot load.

PyPI's torchaudio wheels are linked against CUDA builds of torch; next to the
CPU build of torch (``torch==2.13.0+cpu``) loading ``_torchaudio.abi3.so``
fails on ``libc10_cuda.so`` and ``import torchaudio`` raises ``OSError``.
pyannote.audio imports torchaudio at module level, but everything it and we
use from it (``compliance.kaldi.fbank``, tensor ops) is pure Python on top of
torch; the extension only adds decoders and CTC alignment, and audio reaches
pyannote as in-memory waveforms anyway.

torchaudio itself supports running without the extension (it is what happens
when the ``.so`` file is absent, as in a pex deployment); it only refuses when
the file exists but fails to load. :func:`ensure_torchaudio` reproduces the
"absent" case: it registers a ``torchaudio._extension`` module reporting no
extension before torchaudio is imported. It changes nothing where the real
extension loads.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def _fail_if_no_align(func: Callable[..., Any]) -> Callable[..., Any]:
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{func.__name__} needs torchaudio's alignment extension, which is not loaded")

    return unavailable


def _extension_absent() -> types.ModuleType:
    module = types.ModuleType("torchaudio._extension")
    module._IS_TORCHAUDIO_EXT_AVAILABLE = False  # type: ignore[attr-defined]
    module._IS_ALIGN_AVAILABLE = False  # type: ignore[attr-defined]
    module.fail_if_no_align = _fail_if_no_align  # type: ignore[attr-defined]
    module._load_lib = lambda lib: False  # type: ignore[attr-defined]
    module._check_cuda_version = lambda: None  # type: ignore[attr-defined]
    return module


def ensure_torchaudio() -> bool:
    """Make ``import torchaudio`` work; return True if the real extension loaded."""
    if "torchaudio" in sys.modules:
        return bool(getattr(sys.modules.get("torchaudio._extension"), "_IS_TORCHAUDIO_EXT_AVAILABLE", False))
    try:
        import torchaudio  # noqa: F401

        return True
    except OSError:
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio._extension"] = _extension_absent()
        import torchaudio  # noqa: F401,F811

        return False
