#!/usr/bin/env bash
# The main job on sample speech that ships with the project's dependencies
# (pyannote.audio's sample.wav: 30 s, two people on a phone call):
# audio -> bundle (who said which word, a voice profile per speaker) -> inspect
# -> rehydrated WAV, all in out/. Then the same call again, as tomorrow's
# broadcast would be: the voices are known by now and travel as 6-byte ids.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
R=.venv/bin/relay
# Located without importing pyannote.audio (whose import pulls in torchaudio).
SAMPLE=$(.venv/bin/python -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('pyannote.audio').origin).parent / 'sample' / 'sample.wav')")
mkdir -p out
# The demo's ground and edge, each with its own configuration and state (profile
# stores, voice assignments), fresh each run; a real station's are
# /etc/speech-relay/*.toml and /var/lib/speech-relay (config/, systemd/).
rm -rf out/state
mkdir -p out/state
printf '[ground]\nstate_dir = "%s/out/state/ground"\n' "$PWD" > out/state/ground.toml
printf '[edge]\nstate_dir = "%s/out/state/edge"\n' "$PWD" > out/state/edge.toml
G=(-c out/state/ground.toml)
E=(-c out/state/edge.toml)
echo; echo "== relay ground encode  (ground: Whisper tiny.en + pyannote diarization + a voice fitted to each speaker -> bundle)"
$R ground encode "${G[@]}" "$SAMPLE" -o out/sample.bundle --title "pyannote sample call"
echo; echo "== relay inspect"
$R inspect out/sample.bundle
echo; echo "== relay edge decode  (edge: each speaker in the voice fitted to them, at their pitch and the original timing)"
$R edge decode "${E[@]}" out/sample.bundle -o out/sample.rehydrated.wav
echo; echo "== relay ground encode again  (the same two voices: profiles now go by reference)"
$R ground encode "${G[@]}" "$SAMPLE" -o out/sample.day2.bundle --title "pyannote sample call, day 2"
echo; echo "== relay ground encode --tier codec2-1200  (when a listener must hear the real voices: Codec2 at 1.2 kbit/s)"
$R ground encode "${G[@]}" "$SAMPLE" -o out/sample.codec2.bundle --title "pyannote sample call, real voices" --tier codec2-1200
$R edge decode "${E[@]}" out/sample.codec2.bundle -o out/sample.codec2.wav
echo; echo "Listen: out/sample.rehydrated.wav (synthetic voices), out/sample.codec2.wav (real voices);"
echo "        original: $SAMPLE"
