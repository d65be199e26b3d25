#!/bin/bash
# Build the Sojourn confidential-VM image: Debian 12 (debootstrap, minbase) whose only
# service is `sojourn host`, booted from one unified kernel image (systemd-stub + kernel +
# initrd + command line) with the root file system read-only under dm-verity.
#
#   sudo vm-images/build.sh [--sojourn PATH] [--out DIR] [--mirror URL]
#
# Output (DIR, default vm-images/out): uki.efi, disk.raw (GPT: ESP, squashfs root, verity
# hashes), manifest.txt (package versions), digests.txt, reference values for each target.
# Reproducible: pinned package versions (packages.lock; the build fails if the archive
# serves others), SOURCE_DATE_EPOCH for every timestamp, fixed GPT/file-system/verity
# UUIDs and salt. Needs root (debootstrap, chroot) and: debootstrap squashfs-tools
# cryptsetup-bin dosfstools mtools fdisk binutils cpio systemd-boot-efi (for the build host's
# objcopy and nothing else; the stub comes from the image's own systemd-boot-efi).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=$here/out
sojourn=$repo/target/release/sojourn
mirror=http://deb.debian.org/debian
suite=bookworm
update_lock=0
while [ $# -gt 0 ]; do
    case "$1" in
        --sojourn) sojourn=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --mirror) mirror=$2; shift 2 ;;
        --update-lock) update_lock=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=vm-images/image.conf
. "$here/image.conf"
export SOURCE_DATE_EPOCH LC_ALL=C TZ=UTC
[ "$(id -u)" = 0 ] || { echo "build.sh needs root (debootstrap, chroot)" >&2; exit 2; }
[ -x "$sojourn" ] || { echo "no sojourn binary at $sojourn (cargo build --release)" >&2; exit 2; }
t0=$(date +%s)
step() { echo "[$(($(date +%s) - t0))s] $*"; }
work=$(mktemp -d /var/tmp/sojourn-image.XXXXXX)
trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$out"

step "debootstrap $suite ($mirror)"
debootstrap --variant=minbase --include="$(echo "$PACKAGES" | tr ' ' ',')" \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }

step "checking package versions against packages.lock"
chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' | sort >"$out/manifest.txt"
if [ "$update_lock" = 1 ] || [ ! -s "$here/packages.lock" ]; then
    cp "$out/manifest.txt" "$here/packages.lock"
    echo "  wrote packages.lock ($(wc -l <"$here/packages.lock") packages)"
elif ! diff -u "$here/packages.lock" "$out/manifest.txt"; then
    echo "the archive served other versions than packages.lock (see diff); rerun with --update-lock to accept" >&2
    exit 1
fi
kver=$(basename "$(ls -d "$root"/lib/modules/*)")

step "configuring the root file system (kernel $kver)"
cp -a "$here/rootfs/." "$root/"
install -D -m 0755 "$sojourn" "$root/usr/local/bin/sojourn"
install -D -m 0644 "$repo/README.md" "$root/usr/share/doc/sojourn/README"
systemd-sysusers --root="$root" >/dev/null 2>&1 || chroot "$root" systemd-sysusers
chroot "$root" systemctl enable sojourn.service sojourn-data-init.service sojourn-measurements.service systemd-networkd.service >/dev/null 2>&1
chroot "$root" systemctl mask systemd-pcrphase.service systemd-pcrphase-sysinit.service \
    systemd-pcrphase-initrd.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer fstrim.timer systemd-timesyncd.service >/dev/null 2>&1 || true
echo sojourn >"$root/etc/hostname"
: >"$root/etc/machine-id"
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/cache/ldconfig/aux-cache \
    "$root"/var/lib/systemd/catalog/database "$root"/etc/ssh/ssh_host_* "$root"/var/lib/dbus/machine-id \
    "$root"/boot/initrd.img* "$root"/etc/*- "$root"/root/.bash_history
# shadow's "last change" day is the build day: pin it to SOURCE_DATE_EPOCH.
day=$((SOURCE_DATE_EPOCH / 86400))
sed -i -E "s/^([^:]*:[^:]*:)[0-9]+:/\1$day:/" "$root/etc/shadow"
find "$root" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/usr/lib/os-release" "$work/os-release"
stub=$root/usr/lib/systemd/boot/efi/linuxx64.efi.stub

step "initrd (busybox, veritysetup, modules)"
ir=$root/.initrd-staging   # inside the root so its depmod can run on it
mkdir -p "$ir"/{bin,sbin,etc,lib,lib64,dev,proc,sys,run,sysroot}
cp "$root/bin/busybox" "$ir/bin/busybox"
cp "$here/initrd/init" "$ir/init"
cp "$here/initrd/modules" "$ir/etc/modules"
cp "$root/sbin/veritysetup" "$ir/sbin/veritysetup"
for lib in $(chroot "$root" ldd /sbin/veritysetup | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$ir$(dirname "$lib")"; cp -L "$root$lib" "$ir$lib"
done
for m in $(cat "$here/initrd/modules"); do
    chroot "$root" modprobe -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r ko; do
    mkdir -p "$ir$(dirname "$ko")"; cp "$root$ko" "$ir$ko"
done
cp "$root/lib/modules/$kver/"modules.{order,builtin,builtin.modinfo} "$ir/lib/modules/$kver/"
chroot "$root" depmod -b /.initrd-staging "$kver"
find "$ir" -print0 | xargs -0 touch -h -d "@$SOURCE_DATE_EPOCH"
(cd "$ir" && find . | sort | cpio --quiet -o -H newc --reproducible --owner=0:0 | gzip -n -9) >"$work/initrd.img"
rm -rf "$ir"

step "root file system: squashfs + dm-verity"
umount -R "$root/proc" 2>/dev/null || true
mksquashfs "$root" "$work/root.sqfs" -noappend -comp zstd \
    -no-xattrs -quiet -no-progress -e boot/vmlinuz-"$kver"
roothash=$(veritysetup format "$work/root.sqfs" "$work/root.verity" --salt="$VERITY_SALT" \
    --uuid="$VERITY_UUID" --data-block-size=4096 --hash-block-size=4096 | awk '/^Root hash:/ {print $3}')
echo "$CMDLINE sojourn.roothash=$roothash" >"$work/cmdline"

step "unified kernel image (systemd-stub $(strings "$stub" | grep -o 'systemd-stub [^ ]*' | head -1))"
objcopy \
    --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$work/vmlinuz" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$work/initrd.img" --change-section-vma .initrd=0x3000000 \
    "$stub" "$out/uki.efi"
# objcopy (binutils 2.40) stamps the PE header with the current time, which Authenticode (and
# so PCR 4 / RTMR[1]) covers: set it to SOURCE_DATE_EPOCH and clear the optional PE checksum
# (not used by UEFI; excluded from Authenticode anyway).
le32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"; }
lfanew=$(od -An -tu4 -j60 -N4 "$out/uki.efi" | tr -d ' ')
le32 "$SOURCE_DATE_EPOCH" | dd of="$out/uki.efi" bs=1 seek=$((lfanew + 8)) conv=notrunc status=none
le32 0 | dd of="$out/uki.efi" bs=1 seek=$((lfanew + 24 + 64)) conv=notrunc status=none

step "disk image (GPT: ESP, root, verity)"
esp_mb=64
sq=$(stat -c %s "$work/root.sqfs"); vh=$(stat -c %s "$work/root.verity")
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
root_mb=$(( $(mib "$sq") + 1 )); ver_mb=$(( $(mib "$vh") + 1 ))
total_mb=$(( 1 + esp_mb + root_mb + ver_mb + 1 ))
# Azure wants a whole number of MiB; GCP wants a whole number of GiB (rounded up below).
total_mb=$(( (total_mb + 1023) / 1024 * 1024 ))
rm -f "$out/disk.raw"; truncate -s "${total_mb}M" "$out/disk.raw"
sfdisk -q --no-reread --no-tell-kernel "$out/disk.raw" <<SFDISK
label: gpt
label-id: $DISK_GUID
start=1MiB, size=${esp_mb}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_GUID, name=esp
size=${root_mb}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_GUID, name=sojourn-root
size=${ver_mb}MiB, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=$VERITY_GUID, name=sojourn-verity
SFDISK
rm -f "$work/esp.img"; truncate -s "${esp_mb}M" "$work/esp.img"
mkfs.vfat -F 32 -n ESP -i "$ESP_VOLID" --invariant "$work/esp.img" >/dev/null 2>&1 || mkfs.vfat -F 32 -n ESP -i "$ESP_VOLID" "$work/esp.img" >/dev/null
touch -d "@$SOURCE_DATE_EPOCH" "$out/uki.efi"
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -m -i "$work/esp.img" "$out/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
dd if="$work/esp.img" of="$out/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$work/root.sqfs" of="$out/disk.raw" bs=1M seek=$((1 + esp_mb)) conv=notrunc status=none
dd if="$work/root.verity" of="$out/disk.raw" bs=1M seek=$((1 + esp_mb + root_mb)) conv=notrunc status=none
cp "$work/cmdline" "$out/cmdline"; cp "$work/vmlinuz" "$out/vmlinuz"; cp "$work/initrd.img" "$out/initrd.img"

step "digests"
{
    echo "kernel       $kver"
    echo "cmdline      $(cat "$work/cmdline")"
    echo "roothash     $roothash"
    for f in uki.efi vmlinuz initrd.img disk.raw; do
        echo "sha256 $(sha256sum "$out/$f" | cut -d' ' -f1)  $f"
    done
} | tee "$out/digests.txt"

step "reference values (sojourn-measure)"
measure=${SOJOURN_MEASURE:-}
if [ -z "$measure" ]; then
    (cd "$repo" && cargo build -q --release -p sojourn-measure -j 1)
    measure=${CARGO_TARGET_DIR:-$repo/target}/release/sojourn-measure
fi
"$measure" measure --uki "$out/uki.efi" --disk "$out/disk.raw" \
    --platform az-snp,az-tdx --pcrs 4,9,11 -o "$out/reference-values.azure.toml" | tee -a "$out/digests.txt"
"$measure" measure --uki "$out/uki.efi" --disk "$out/disk.raw" \
    --platform tdx -o "$out/reference-values.tdx.toml" >/dev/null
if [ -n "${OVMF_AMDSEV:-}" ]; then
    "$measure" measure --uki "$out/uki.efi" --ovmf "$OVMF_AMDSEV" --vcpus "${SNP_VCPUS:-2}" \
        --vcpu-type "${SNP_VCPU_TYPE:-EPYC-v4}" --platform snp -o "$out/reference-values.snp.toml" | tee -a "$out/digests.txt"
fi
step "done: $out"
