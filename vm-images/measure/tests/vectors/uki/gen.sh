#!/bin/sh
# Regenerate expected.json: the test UKI (built deterministically by tests/common) measured
# by independent tools. Needs Debian's systemd (systemd-measure) and pesign.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d)
cd "$here/../../../../.."
SOJOURN_MEASURE_DUMP="$d" cargo test -q -p sojourn-measure --test uki dump_inputs >/dev/null
m=/usr/lib/systemd/systemd-measure
[ -x "$m" ] || m=/lib/systemd/systemd-measure
cd "$d"
j=$("$m" calculate --linux=linux --osrel=osrel --cmdline=cmdline --initrd=initrd \
    --bank=sha256 --bank=sha384 --phase= --json=short)
p256=$(printf '%s' "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha256"][0]["hash"])')
p384=$(printf '%s' "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sha384"][0]["hash"])')
auth=$(pesign -h -i uki.efi | awk '{print $NF}')
cat > "$here/expected.json" <<JSON
{
  "tools": "$("$m" --version | head -1) (Debian systemd $(dpkg-query -W -f='${Version}' systemd)); pesign $(dpkg-query -W -f='${Version}' pesign)",
  "commands": [
    "systemd-measure calculate --linux=linux --osrel=osrel --cmdline=cmdline --initrd=initrd --bank=sha256 --bank=sha384 --phase= --json=short",
    "pesign -h -i uki.efi"
  ],
  "pcr11_sha256": "$p256",
  "pcr11_sha384": "$p384",
  "uki_authenticode_sha256": "$auth"
}
JSON
rm -rf "$d"
cat "$here/expected.json"
