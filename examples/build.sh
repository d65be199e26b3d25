#!/usr/bin/env bash
# Rebuilds the example objects into their committed locations:
#   counter/counter.wasm        from counter/counter.wat        (wat2wasm, wabt)
#   thermostat/thermostat.wasm  from thermostat/thermostat.c    (clang-19 + wasm-ld-19, no libc)
#   escrow/escrow.wasm          from escrow/escrow.rs           (Debian's rustc 1.63, no_std)
#
# Usage:
#   examples/build.sh             rebuild all three in place, print their sha256
#   examples/build.sh --check     rebuild into a temp dir; fail naming each .wasm that differs
#                                 byte for byte from the committed one
#   examples/build.sh --install   first apt-get install the toolchains if any is missing
#                                 (combines with --check)
# Exit status: 0 ok; 1 a module differs or fails its checks; 3 (or apt's) toolchain missing.
#
# The outputs are reproducible: no debug info, no names or producers sections, source paths
# remapped. Byte-for-byte equality needs the same toolchain versions (Debian 12 packages:
# clang-19/lld-19 19.1.7, wabt 1.0.32, rustc 1.63.0 with lld-14 as its rust-lld), printed
# below.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

install=0
check=0
for arg in "$@"; do
    case "$arg" in
        --install) install=1 ;;
        --check) check=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$arg' (expected --install and/or --check)" >&2; exit 2 ;;
    esac
done

CLANG=clang-19
WASM_LD=wasm-ld-19
WAT2WASM=wat2wasm
# Debian's rustc (1.63) and its wasm32 std; a rustup rustc earlier in PATH is deliberately
# not used: another compiler version gives other bytes.
RUSTC=/usr/bin/rustc
RUST_LLD=/usr/bin/rust-lld   # Debian: a link to lld-14
RUST_WASM_STD=/usr/lib/rustlib/wasm32-unknown-unknown/lib

tools_present() {
    command -v "$CLANG" >/dev/null && command -v "$WASM_LD" >/dev/null &&
        command -v "$WAT2WASM" >/dev/null && [ -x "$RUSTC" ] && [ -e "$(readlink -f "$RUST_LLD")" ] &&
        [ -d "$RUST_WASM_STD" ]
}

if [ "$install" = 1 ] && ! tools_present; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # wasi-libc and libclang-rt are not linked (-nostdlib) but make clang's wasm32-wasi
    # target complete; lld-14 is the linker Debian's rustc 1.63 calls as rust-lld.
    apt-get install -y clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 \
        rustc libstd-rust-dev-wasm32 lld-14 wabt
fi

if ! tools_present; then
    echo "build.sh: missing toolchain; need $CLANG, $WASM_LD, $WAT2WASM, $RUSTC with the wasm32-unknown-unknown std and $RUST_LLD (lld-14)." >&2
    echo "build.sh: run 'examples/build.sh --install' (as root, Debian 12)." >&2
    exit 3
fi

if [ "$check" = 1 ]; then
    OUT=$(mktemp -d)
    trap 'rm -rf "$OUT"' EXIT
else
    OUT="$HERE"
fi
mkdir -p "$OUT/counter" "$OUT/thermostat" "$OUT/escrow"

echo "toolchain: $($CLANG --version | head -n1); $($WAT2WASM --version) (wabt); $($RUSTC --version)"

# --- counter: hand-written WAT --------------------------------------------------------------
# wat2wasm writes no names section unless asked (--debug-names), so the output is just the
# module. (The `wat` crate would add a names section: its bytes differ, its module is the same.)
"$WAT2WASM" "$HERE/counter/counter.wat" -o "$OUT/counter/counter.wasm.tmp"
mv "$OUT/counter/counter.wasm.tmp" "$OUT/counter/counter.wasm"

# --- thermostat: C, no libc -----------------------------------------------------------------
# -mcpu=mvp: plain MVP instructions only. 2 pages of memory (16 KiB stack first, then data),
# fixed (max = initial); --strip-all drops the names and producers sections.
"$CLANG" --target=wasm32-wasi -mcpu=mvp -O2 -g0 -nostdlib -Wall -Wextra -Werror \
    -ffile-prefix-map="$HERE"=. \
    -fuse-ld=lld -Wl,--no-entry -Wl,--strip-all -Wl,--stack-first -Wl,-z,stack-size=16384 \
    -Wl,--initial-memory=131072 -Wl,--max-memory=131072 \
    -o "$OUT/thermostat/thermostat.wasm.tmp" "$HERE/thermostat/thermostat.c"
mv "$OUT/thermostat/thermostat.wasm.tmp" "$OUT/thermostat/thermostat.wasm"

# --- escrow: Rust, no_std -------------------------------------------------------------------
# opt-level=s + fat LTO lets the panic paths (which only reach `unreachable`) drop all of
# core::fmt; strip=symbols drops the names section; 16 KiB stack first, then data: 1 page.
ESCROW_TMP=$(mktemp -d)
"$RUSTC" --edition 2021 --target wasm32-unknown-unknown --crate-type cdylib --crate-name escrow \
    -C opt-level=s -C lto=fat -C codegen-units=1 -C panic=abort -C strip=symbols \
    -C debuginfo=0 -C link-arg=-zstack-size=16384 \
    --remap-path-prefix "$HERE"=. \
    -o "$ESCROW_TMP/escrow.wasm" "$HERE/escrow/escrow.rs"
mv "$ESCROW_TMP/escrow.wasm" "$OUT/escrow/escrow.wasm"
rm -rf "$ESCROW_TMP"

# --- checks on the modules (ABI limits of docs/object-abi.md) ------------------------------
verify() { # verify <file.wasm> <shown name>
    local f=$1 name=$2 x
    command -v wasm-objdump >/dev/null || return 0
    x=$(wasm-objdump -x "$f")
    if echo "$x" | grep -E '^ - (func|memory|table|global)\[[0-9]+\].* <- ' | grep -qv ' <- sojourn\.'; then
        echo "build.sh: $name imports from a module other than \"sojourn\"" >&2; return 1
    fi
    echo "$x" | grep -q '^ - memory\[0\] -> "memory"' || { echo "build.sh: $name does not export memory" >&2; return 1; }
    echo "$x" | grep -q '> -> "sojourn_tick"' || { echo "build.sh: $name does not export sojourn_tick" >&2; return 1; }
    if [ "$(echo "$x" | grep -c '^ - memory\[')" -gt 2 ]; then
        echo "build.sh: $name has more than one memory" >&2; return 1
    fi
    if wasm-objdump -d "$f" | grep -qE '\b(table\.(set|grow|fill|copy|init)|elem\.drop)\b'; then
        echo "build.sh: $name mutates a table" >&2; return 1
    fi
}

chmod 644 "$OUT/counter/counter.wasm" "$OUT/thermostat/thermostat.wasm" "$OUT/escrow/escrow.wasm"

status=0
for f in counter/counter.wasm thermostat/thermostat.wasm escrow/escrow.wasm; do
    verify "$OUT/$f" "examples/$f" || status=1
    sum=$(sha256sum "$OUT/$f" | cut -d' ' -f1)
    if [ "$check" = 1 ]; then
        if [ ! -f "$HERE/$f" ]; then
            echo "build.sh: examples/$f is missing (rebuilt sha256 $sum)" >&2
            status=1
        elif ! cmp -s "$OUT/$f" "$HERE/$f"; then
            echo "build.sh: examples/$f differs from a fresh build (committed sha256 $(sha256sum "$HERE/$f" | cut -d' ' -f1), rebuilt $sum)" >&2
            status=1
        else
            echo "$sum  examples/$f (matches)"
        fi
    else
        echo "$sum  examples/$f"
    fi
done
exit "$status"
