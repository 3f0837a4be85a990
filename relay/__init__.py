"""speech-relay core: the bundle format and what both ends of the link share.

This package never imports ``ground`` or ``edge``: a Raspberry Pi at the edge
installs it without Whisper, and a ground station without TTS voices.
"""

__version__ = "0.1.0"
