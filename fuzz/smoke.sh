#!/usr/bin/env bash
# Smoke-run every fuzz target for a few seconds from a scratch copy of its seeds; exits
# non-zero on the first crash. Usage: fuzz/smoke.sh [seconds-per-target]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
target_dir="${CARGO_TARGET_DIR:-target}"
for t in snp_report tdx_quote hcl_report tpm_quote evidence descriptor_toml descriptor_cbor \
    migration_binding migration_bundle migration_sealed; do
  corpus="$(mktemp -d)"
  log="$(mktemp)"
  cp -r "seeds/$t/." "$corpus/"
  if cargo +nightly fuzz run -O --target-dir "$target_dir" "$t" "$corpus" -- \
      -max_total_time="$secs" >"$log" 2>&1; then
    echo "$t: $(grep -E '^Done' "$log" || echo ok)"
  else
    tail -40 "$log"
    echo "$t: FAILED" >&2
    exit 1
  fi
  rm -rf "$corpus" "$log"
done
