#!/bin/bash
# The bounded CI part of vm-images (a few minutes on a fresh Debian machine with the Rust
# toolchain): lint the recipe, then `cargo test -p sojourn-measure`, which checks the SNP
# launch digest against committed sev-snp-measure vectors and, when the tools are installed
# (this script installs them if it may use apt), PCR 11 against systemd-measure and
# Authenticode against pesign live.
#
# The whole image build + QEMU boot test is not run here (needs root, network to the Debian
# archive, ~3 minutes of build and a VM): set VM_IMAGES_FULL=1 to run it as well, or run
#   sudo vm-images/build.sh && sudo vm-images/boot-test.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
t0=$(date +%s); step() { echo "[vm-images $(($(date +%s) - t0))s] $*"; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    command -v shellcheck >/dev/null || need+=(shellcheck)
    [ -x /usr/lib/systemd/systemd-measure ] || [ -x /lib/systemd/systemd-measure ] || need+=(systemd)
    command -v pesign >/dev/null || need+=(pesign)
    if [ ${#need[@]} -gt 0 ]; then
        step "apt-get install ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; } \
            || echo "  (could not install ${need[*]}; the live cross-checks are skipped)"
    fi
fi

step "recipe lint"
scripts=(build.sh boot-test.sh make-data-disk.sh ci-check.sh initrd/init
         rootfs/usr/local/libexec/sojourn-data-init rootfs/usr/local/libexec/sojourn-start)
for s in "${scripts[@]}"; do bash -n "$here/$s"; done
if command -v shellcheck >/dev/null; then
    (cd "$here" && shellcheck -S warning -e SC1091,SC2016 "${scripts[@]}")
else
    echo "  shellcheck not installed: syntax only"
fi
unit=$here/rootfs/etc/systemd/system/sojourn.service
for key in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes User=sojourn \
           CapabilityBoundingSet= ReadWritePaths=/var/lib/sojourn RestrictNamespaces=yes; do
    grep -qx "$key" "$unit" || { echo "sojourn.service lacks $key" >&2; exit 1; }
done
grep -q '^u sojourn ' "$here/rootfs/usr/lib/sysusers.d/sojourn.conf"
# Every package line is name=version, and the kernel and stub are pinned.
grep -qvE '^[a-z0-9.+-]+(:amd64)?=[^ ]+$' "$here/packages.lock" && { echo "packages.lock: malformed line" >&2; exit 1; }
grep -q '^linux-image-6' "$here/packages.lock"; grep -q '^systemd-boot-efi=' "$here/packages.lock"
# shellcheck source=vm-images/image.conf
(. "$here/image.conf"; [ -n "$SOURCE_DATE_EPOCH" ] && [ ${#VERITY_SALT} = 64 ])

step "cargo test -p sojourn-measure"
(cd "$repo" && cargo test -q -p sojourn-measure -j "${CARGO_JOBS:-1}")

if [ "${VM_IMAGES_FULL:-0}" = 1 ]; then
    step "full image build + QEMU boot test"
    "$here/build.sh" --out "$here/out"
    "$here/boot-test.sh" --image "$here/out"
fi
step "ok"
