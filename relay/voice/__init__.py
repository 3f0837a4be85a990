"""Voices both sides speak with: the TTS engines, the catalog of every voice installed, the voice
bank (what each sounds like), and the pitch, timbre and colour changes that bring a voice to a
speaker. The edge casts and speaks with them; the ground fits a voice to a speaker with them."""
