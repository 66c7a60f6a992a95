#!/usr/bin/env bash
# Generate a small PKI for a trial setup: a CA, a broker (server) certificate and client certificates.
#
# For a trial or a lab only: the CA key lies beside the certificates. In production use your
# organisation's CA and keep its key offline.
#
#   deploy/certs.sh [-o DIR] [-d DAYS] [-s SERVER_NAME]... [-c CLIENT]... [-f]
#
#   -o DIR          output folder (default ./pki)
#   -d DAYS         validity of new certificates (default 825)
#   -s SERVER_NAME  DNS name or IP address of the broker, repeatable (default: localhost and 127.0.0.1)
#   -c CLIENT       a client certificate with this common name (use the MQTT username), repeatable
#   -f              replace existing server and client certificates (the CA is always kept)
#
# Writes ca.crt ca.key server.crt server.key and CLIENT.crt CLIENT.key into DIR. Idempotent: an
# existing CA is reused so that clients can be added later, and existing certificates are kept.
# Keys are EC P-256 (fast on small ARM boards, supported by Mosquitto, paho and OpenSSL 1.1+).
set -euo pipefail
umask 077

out=./pki
days=825
force=0
servers=()
clients=()

usage() { sed -n '2,17s/^# \{0,1\}//p' "$0"; exit "${1:-0}"; }

while getopts "o:d:s:c:fh" option; do
    case "$option" in
        o) out=$OPTARG ;;
        d) days=$OPTARG ;;
        s) servers+=("$OPTARG") ;;
        c) clients+=("$OPTARG") ;;
        f) force=1 ;;
        h) usage 0 ;;
        *) usage 2 ;;
    esac
done
[ "${#servers[@]}" -gt 0 ] || servers=(localhost 127.0.0.1)

name_ok() { [[ $1 =~ ^[A-Za-z0-9._-]+$ ]]; }
for name in "${servers[@]}" "${clients[@]}"; do
    name_ok "$name" || { echo "certs.sh: refusing name '$name' (letters, digits, '.', '_', '-' only)" >&2; exit 2; }
done

mkdir -p "$out"
cd "$out"

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: a certificate NAME.crt for key NAME.key signed by the CA
sign() {
    local name=$1 subject=$2 extensions=$3
    openssl req -new -key "$name.key" -subj "$subject" -out "$name.csr"
    printf '%s\n' "$extensions" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
        -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

if [ ! -s ca.crt ] || [ ! -s ca.key ]; then
    new_key ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=edge-agent trial CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
    echo "created CA $out/ca.crt"
fi

if [ "$force" = 1 ] || [ ! -s server.crt ]; then
    alt=()
    for name in "${servers[@]}"; do
        if [[ $name =~ ^[0-9.]+$ ]]; then alt+=("IP:$name"); else alt+=("DNS:$name"); fi
    done
    new_key server.key
    sign server "/CN=${servers[0]}" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$(IFS=,; echo "${alt[*]}")"
    echo "created server certificate $out/server.crt for ${servers[*]}"
fi

for client in "${clients[@]}"; do
    if [ "$force" = 1 ] || [ ! -s "$client.crt" ]; then
        new_key "$client.key"
        sign "$client" "/CN=$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
        echo "created client certificate $out/$client.crt"
    fi
done

# Certificates are public; keys stay readable by the owner only (umask 077 above).
chmod 644 ./*.crt
