#!/bin/bash
# Boot the built image under QEMU (KVM if usable, else TCG software emulation) with Debian's
# OVMF and a software TPM (swtpm, if installed), wait for `sojourn host` (software
# attestation), deploy the counter object from outside and list it, compare the PCRs the
# guest prints with sojourn-measure's prediction, stop the VM.
#
#   sudo vm-images/boot-test.sh [--image DIR] [--tcg] [--timeout 300]
#
# Needs: qemu-system-x86_64, ovmf, openssl, e2fsprogs; optional swtpm; the sojourn binary
# (client side) at target/release/sojourn; sojourn-measure ($SOJOURN_MEASURE or built).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
image=$here/out timeout=300 accel=auto
sojourn=${SOJOURN:-$repo/target/release/sojourn}
qemu=${QEMU:-qemu-system-x86_64}
while [ $# -gt 0 ]; do
    case "$1" in
        --image) image=$2; shift 2 ;;
        --tcg) accel=tcg; shift ;;
        --timeout) timeout=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$ovmf_code" ] || { echo "install ovmf" >&2; exit 2; }
if [ "$accel" = auto ]; then
    if [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
fi
w=$(mktemp -d); port=$((20000 + RANDOM % 20000))
qpid='' tpid=''
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null || true
    [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
    echo "console log: $w/console.log"
}
trap cleanup EXIT
t0=$(date +%s); step() { echo "[$(($(date +%s) - t0))s] $*"; }

step "data volume (software attestation, TLS for 127.0.0.1)"
"$here/make-data-disk.sh" "$w/data.img" --san IP:127.0.0.1 --size 1G >/dev/null
sed -i "s|^url = .*|url = \"https://127.0.0.1:$port\"|" "$w/data.img.client.toml"
cp "$ovmf_vars" "$w/vars.fd"
tpm=()
if command -v swtpm >/dev/null; then
    mkdir -p "$w/tpm"
    swtpm socket --tpm2 --tpmstate dir="$w/tpm" --ctrl type=unixio,path="$w/tpm.sock" \
        --flags startup-clear >"$w/swtpm.log" 2>&1 &
    tpid=$!
    for _ in $(seq 50); do [ -S "$w/tpm.sock" ] && break; sleep 0.1; done
    # shellcheck disable=SC2054  # QEMU options, commas intended
    tpm=(-chardev socket,id=chrtpm,path="$w/tpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0)
fi

step "booting $image/disk.raw ($accel, vTPM: $([ -n "$tpid" ] && echo swtpm || echo none))"
"$qemu" -machine q35 -accel "$accel" -m 2048 -smp 2 -nographic -nodefaults \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$ovmf_code" \
    -drive if=pflash,format=raw,unit=1,file="$w/vars.fd" \
    -drive file="$image/disk.raw",if=none,id=boot,format=raw,snapshot=on -device virtio-blk-pci,drive=boot,bootindex=0 \
    -drive file="$w/data.img",if=none,id=data,format=raw -device virtio-blk-pci,drive=data,serial=sojourn-data \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:$port-:7443 -device virtio-net-pci,netdev=n0,romfile= \
    "${tpm[@]}" -serial file:"$w/console.log" -monitor none &
qpid=$!

export SOJOURN_CLIENT_CONFIG=$w/data.img.client.toml
step "waiting for the host (up to ${timeout}s)"
until "$sojourn" health >/dev/null 2>&1; do
    kill -0 "$qpid" 2>/dev/null || { tail -40 "$w/console.log"; echo "QEMU exited" >&2; exit 1; }
    [ $(($(date +%s) - t0)) -lt "$timeout" ] || { tail -40 "$w/console.log"; echo "timeout" >&2; exit 1; }
    sleep 2
done
step "host is up"; "$sojourn" health
"$sojourn" deploy "$repo/examples/counter"
"$sojourn" ls | tee "$w/ls.txt"
grep -q counter "$w/ls.txt" || { echo "counter not listed" >&2; exit 1; }
step "deploy + list: ok"

if [ -n "$tpid" ]; then
    for _ in $(seq 30); do grep -q "sojourn-pcr 12" "$w/console.log" && break; sleep 1; done
    measure=${SOJOURN_MEASURE:-}
    if [ -z "$measure" ]; then
        (cd "$repo" && cargo build -q --release -p sojourn-measure -j 1)
        measure=${CARGO_TARGET_DIR:-$repo/target}/release/sojourn-measure
    fi
    "$measure" measure --uki "$image/uki.efi" --disk "$image/disk.raw" \
        --failed-boot-attempts "${FAILED_BOOT_ATTEMPTS:-0}" --json >"$w/predicted.json"
    status=0
    for i in 4 9 11 12; do
        got=$(grep -a "sojourn-pcr $i " "$w/console.log" | tail -1 | awk '{print tolower($3)}' | tr -d '\r')
        want=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['values']['pcr%02d (sha256)' % int(sys.argv[2])])" "$w/predicted.json" "$i")
        if [ "$got" = "$want" ]; then echo "PCR $i: $got (as predicted)"; else echo "PCR $i: guest $got, predicted $want" ; status=1; fi
    done
    if [ $status != 0 ]; then
        step "PCR MISMATCH (see above; the event log is in the console log between sojourn-eventlog markers)"
        exit 1
    fi
    step "PCRs 4, 9, 11, 12 match the prediction"
fi
step "stopping the VM"
kill "$qpid"; wait "$qpid" 2>/dev/null || true; qpid=
step "boot test passed"
