#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), starting from the seeds in
# fuzz/seeds/ and the corpus grown by earlier runs (fuzz/corpus/, not committed).
# Needs the nightly toolchain; installs cargo-fuzz if missing. Exits 1 on the first crash and
# prints the input that caused it: fix the bug, then copy the input to
# tests/fixtures/fuzz/<target>/ so tests/fuzz_regressions.rs replays it for ever.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh --build-only     (build every target and stop, as CI does ahead of its runs)
#
# Builds are optimised with debug assertions and overflow checks on (cargo fuzz's default).
# FUZZ_SANITIZER=none skips AddressSanitizer (a faster build; the code under test is safe Rust,
# so panics, hangs and runaway allocations are still caught), as CI does.
# FUZZ_BUILD=dev builds unoptimised, as CI does for its short runs: the build took 7.3 minutes
# where an optimised one (16 codegen units) took 14.2 (2 cores, same hour), but the targets then
# run 17-20 times fewer inputs per second. Fuzz for real with the default.
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=0
if [ "${1:-}" = --build-only ]; then
  build_only=1
  shift
fi
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(manifest ipns_record unixfs bitswap_message reference range)
fi

if ! rustup toolchain list | grep '^nightly' >/dev/null; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo +nightly install --locked cargo-fuzz
fi

sanitizer="${FUZZ_SANITIZER:-address}"
mode="${FUZZ_BUILD:-release}"
case "$mode" in
  release) build=() ;; # cargo fuzz's default: optimised, with debug assertions (-O drops them)
  dev) build=(--dev) ;;
  *) echo "fuzz.sh: FUZZ_BUILD is release or dev, not $mode" >&2; exit 2 ;;
esac
echo "== building the fuzz targets (nightly, $mode build, sanitizer: $sanitizer)"
cargo +nightly fuzz build ${build[@]+"${build[@]}"} -s "$sanitizer"
if [ "$build_only" = 1 ]; then
  echo "fuzz.sh: built; nothing run (--build-only)"
  exit 0
fi

for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  echo "== fuzzing $target for ${seconds}s"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a runaway allocation.
  if ! cargo +nightly fuzz run ${build[@]+"${build[@]}"} -s "$sanitizer" "$target" "$corpus" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      > "fuzz/$target.log" 2>&1; then
    tail -n 60 "fuzz/$target.log" >&2
    echo "fuzz.sh: $target found a crash; the input is under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "fuzz/$target.log" | tail -1
done
echo "fuzz.sh: no crash in ${#targets[@]} targets"
