#!/bin/bash
# Make the data volume of a Sojourn VM: an ext4 file system labelled sojourn-data holding the
# host's configuration (config/host.toml), its TLS identity (a fresh CA and a server
# certificate for the given names/addresses) and an admin token; prints where the matching
# client.toml is.
#
#   vm-images/make-data-disk.sh OUT.img --san IP:203.0.113.7 [--san DNS:host.example]
#       [--mode software|snp|tdx] [--reference-values FILE] [--peer-token FILE] [--size 4G]
#
# Writes OUT.img and OUT.client.toml (0600: it holds the admin token). Needs root (files
# owned by the sojourn user, uid 970), openssl, mke2fs.
set -euo pipefail
out=${1:?usage: make-data-disk.sh OUT.img [--san ...]}; shift
sans=() mode=software rv='' size=4G peer=''
while [ $# -gt 0 ]; do
    case "$1" in
        --san) sans+=("$2"); shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --reference-values) rv=$2; shift 2 ;;
        --peer-token) peer=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ ${#sans[@]} -gt 0 ] || sans=("IP:127.0.0.1" "DNS:localhost")
if [ "$mode" != software ] && [ -z "$rv" ]; then
    echo "--mode $mode needs --reference-values (the host refuses hardware modes without them)" >&2; exit 2
fi
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
c=$d/root/config; mkdir -p "$c/tls" "$d/root/data"
openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key" 2>/dev/null
openssl req -x509 -new -key "$d/ca.key" -subj "/CN=sojourn host CA" -days 3650 -out "$c/tls/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$d/k.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$d/k.pem" -out "$c/tls/server.key"
openssl req -new -key "$c/tls/server.key" -subj "/CN=sojourn host" -out "$d/server.csr" 2>/dev/null
san=$(IFS=,; echo "${sans[*]}")
openssl x509 -req -in "$d/server.csr" -CA "$c/tls/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") \
    -out "$c/tls/server.pem" 2>/dev/null
rm -f "$d/ca.key"   # the CA vouches for this one certificate only
token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$token" >"$c/admin.token"
{
    echo 'data_dir = "/var/lib/sojourn/data"'
    echo 'listen = "0.0.0.0:7443"'
    echo
    echo '[tls]'
    echo 'cert = "/var/lib/sojourn/config/tls/server.pem"'
    echo 'key = "/var/lib/sojourn/config/tls/server.key"'
    echo
    echo '[attestation]'
    echo "mode = \"$mode\""
    if [ -n "$rv" ]; then
        cp "$rv" "$c/reference-values.toml"
        echo 'reference_values = "/var/lib/sojourn/config/reference-values.toml"'
    fi
    echo
    echo '[[auth.tokens]]'
    echo 'name = "operator"'
    echo 'token_file = "/var/lib/sojourn/config/admin.token"'
    echo 'role = "admin"'
    if [ -n "$peer" ]; then
        cp "$peer" "$c/peer.token"
        echo
        echo '[[auth.tokens]]'
        echo 'name = "peer"'
        echo 'token_file = "/var/lib/sojourn/config/peer.token"'
        echo 'role = "peer"'
    fi
} >"$c/host.toml"
chmod 0700 "$d/root/data" "$c" "$c/tls"; chmod 0600 "$c"/*.token "$c/tls/server.key"; chmod 0644 "$c/host.toml" "$c/tls/"*.pem
chown -R 970:970 "$d/root"
rm -f "$out"; truncate -s "$size" "$out"
mke2fs -q -t ext4 -L sojourn-data -d "$d/root" -E root_owner=970:970 "$out"
host=$(echo "${sans[0]}" | cut -d: -f2-)
umask 077
{
    echo "url = \"https://$host:7443\""
    echo 'ca_pem = """'; cat "$c/tls/ca.pem"; echo '"""'
    echo "token = \"$token\""
} >"$out.client.toml"
echo "wrote $out (mode $mode, names ${sans[*]}) and $out.client.toml"
