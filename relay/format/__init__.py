"""The bundle and its bytes: the dataclasses, formats v1 (msgpack and zstd) and v2 (one
arithmetic-coded stream under a text model), what both carry alike, limits, voice profiles on the wire."""
