#!/usr/bin/env bash
# The main job on sample speech that ships with the project's dependencies
# (pyannote.audio's sample.wav: 30 s, two people on a phone call):
# audio -> bundle -> inspect -> rehydrated WAV, all in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
R=.venv/bin/relay
# Located without importing pyannote.audio (whose import pulls in torchaudio).
SAMPLE=$(.venv/bin/python -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('pyannote.audio').origin).parent / 'sample' / 'sample.wav')")
mkdir -p out
echo; echo "== relay encode  (ground: Whisper tiny.en -> bundle)"
$R encode "$SAMPLE" -o out/sample.bundle --title "pyannote sample call"
echo; echo "== relay inspect"
$R inspect out/sample.bundle
echo; echo "== relay decode  (edge: Piper voice at the original timing)"
$R decode out/sample.bundle -o out/sample.rehydrated.wav
echo; echo "Listen: out/sample.rehydrated.wav (original: $SAMPLE)"
