"""Ground station: audio in, compact bundles out (ASR now; diarization next)."""
