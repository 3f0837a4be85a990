"""The bundle and its bytes: dataclasses, wire format v1, limits, the zstd dictionary, voice profiles on the wire."""
