"""TTS engine backends; see :mod:`relay.voice.catalog`."""
