"""TTS engine backends; see :mod:`edge.catalog`."""
