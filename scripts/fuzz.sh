#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer, AddressSanitizer), each for
# SECONDS (default 600), one after another; a crash or a failed assertion stops with
# its input in fuzz/artifacts/<target>/ and a non-zero exit.
#
#   scripts/fuzz.sh                   # every target, 10 minutes each
#   scripts/fuzz.sh 60 jpeg_dc        # one target, one minute
#   scripts/fuzz.sh --list            # the targets
#
# The corpus grows in fuzz/corpus/<target>/ (not committed), started from the seeds in
# fuzz/seeds/<target>/. Reproduce a finding with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> fuzz/artifacts/<target>/<file>
# (from fuzz/'s parent). This machine has only the stable toolchain; cargo-fuzz passes
# nightly flags (-Zsanitizer), which RUSTC_BOOTSTRAP=1 lets stable accept.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1
TARGETS=(filetype multipart_upload contact ringcentral_webhook jpeg_dc templates inbound_email request_text)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
seconds="${1:-600}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS] [TARGET...] | --list" >&2; exit 2; }
shift || true
(($# > 0)) && TARGETS=("$@")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (once) ..."
  cargo install cargo-fuzz --locked
fi

cargo fuzz build -O
bin="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
mkdir -p target/fuzz
summary=()
status=0
for target in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log="target/fuzz/$target.log"
  echo "fuzzing $target for ${seconds} s (log: $log) ..."
  # The binaries built above, run directly: `cargo fuzz run` would rebuild first, and
  # an edit made meanwhile would be fuzzed (or fail to build) half-way through the run.
  if "$bin/$target" \
      -artifact_prefix="fuzz/artifacts/$target/" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      "fuzz/corpus/$target" "fuzz/seeds/$target" >"$log" 2>&1; then
    outcome="no findings"
  else
    outcome="FOUND a failure: see $log and fuzz/artifacts/$target/"
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  summary+=("$(printf '%-20s %12s executions  %6s inputs in corpus  %s' "$target" "$runs" "$corpus" "$outcome")")
done
printf '\n%s\n' "${summary[@]}"
exit "$status"
