"""TTS engine backends; see :mod:`relay.voice.catalog`."""

import logging

# espeak-ng's phonemizer (under Kokoro) warns on every phrase whose word count it re-splits ("words count
# mismatch"): harmless, and hundreds of lines in a daemon's log; quiet before any engine loads it
logging.getLogger("phonemizer").setLevel(logging.ERROR)
