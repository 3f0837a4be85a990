#!/usr/bin/env bash
# TLS certificates for the link between a ship's broker and the ground's.
#
#   scripts/make-certs.sh DIR SERVER_NAME [SHIP ...]
#
# In DIR: ca.crt and ca.key (the certificate authority: keep ca.key off the
# brokers), server.crt and server.key for the ground broker's TLS listener,
# valid for SERVER_NAME (its DNS name or IP address, as the ships' bridges
# dial it), and SHIP.crt and SHIP.key for each ship's bridge, with the common
# name SHIP: the ground's listener takes it as the bridge's user name
# (use_identity_as_username), so the ACL gives it that edge's topics and no
# password travels or sits in a file. Run it again to add ships: the CA and
# every existing key are kept, never overwritten. Keys are EC P-256 (short
# handshakes on a thin link), certificates valid for ten years.
#
# A ship's name is its edge's name (letters, digits, _ and -, at most 32), and
# never the ground's ("ground", the shipped ACL's, and GROUND_NAME if the
# ground has another: that user holds every edge's topics) nor "ca" or
# "server" (this folder's own files).
#
# Then: copy ca.crt, server.crt and server.key to the ground's
# /etc/mosquitto/speech-relay/ (config/mosquitto-tls.conf), and ca.crt,
# SHIP.crt and SHIP.key to that ship's (config/mosquitto-bridge.conf);
# chown them to mosquitto, mode 0600 for the keys.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 DIR SERVER_NAME [SHIP ...]" >&2
  exit 2
fi
dir=$1 server=$2
shift 2
command -v openssl >/dev/null || { echo "make-certs: openssl is not installed (apt install openssl)" >&2; exit 1; }
umask 077
days=3650
key() { [ -f "$1" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ground=${GROUND_NAME:-ground}
name_ok() {
  [[ $1 =~ ^[A-Za-z0-9_-]{1,32}$ ]] || { echo "make-certs: bad ship name '$1' (an edge name: letters, digits, _ and -, at most 32)" >&2; exit 2; }
  if [ "$1" = "$ground" ] || [ "$1" = ground ] || [ "$1" = ca ] || [ "$1" = server ]; then
    echo "make-certs: a ship may not be named '$1': that name is the ground's (its broker user holds every edge's topics) or this folder's own" >&2
    exit 2
  fi
}
for ship in "$@"; do name_ok "$ship"; done  # every name checked before anything is made
mkdir -p "$dir"

if [ ! -f "$dir/ca.crt" ]; then
  key "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -days "$days" -subj "/CN=speech-relay CA" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made $dir/ca.crt"
fi

sign() {  # sign NAME EXTENSIONS
  local ext
  ext=$(mktemp)
  printf '%s\n' "$2" > "$ext"
  openssl req -new -key "$dir/$1.key" -subj "/CN=$3" -out "$dir/$1.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days "$days" \
    -extfile "$ext" -out "$dir/$1.crt" 2>/dev/null
  rm -f "$dir/$1.csr" "$ext"
  echo "made $dir/$1.crt"
}

[[ $server =~ ^[A-Za-z0-9_.:-]{1,253}$ ]] || { echo "make-certs: bad server name '$server'" >&2; exit 1; }
if [ ! -f "$dir/server.crt" ]; then
  key "$dir/server.key"
  if [[ $server =~ ^[0-9.]+$ || $server == *:* ]]; then san="IP:$server"; else san="DNS:$server"; fi
  sign server "subjectAltName=$san
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature" "$server"
fi

for ship in "$@"; do
  name_ok "$ship"
  [ -f "$dir/$ship.crt" ] && continue
  key "$dir/$ship.key"
  sign "$ship" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature" "$ship"
done
chmod 644 "$dir"/*.crt
