#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a fixed time each; any crash, panic, timeout or
# out-of-memory fails (exit status non-zero, the input saved under fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default: 30 s each, every target
#
# Each target starts from a scratch copy of its seed corpus in fuzz/corpus/TARGET, so a run
# never adds files to the repository. Needs cargo-fuzz and a nightly toolchain (see
# fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS] [TARGET...]   (SECONDS: a positive whole number)" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for every target, so the per-target time is spent fuzzing.
cargo +nightly fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for target in "${targets[@]}"; do
  if [ ! -d "fuzz/corpus/$target" ]; then
    echo "unknown fuzz target \`$target\` (no fuzz/corpus/$target)" >&2
    exit 2
  fi
  mkdir -p "$scratch/$target"
  cp -R "fuzz/corpus/$target/." "$scratch/$target/"
  echo "== fuzzing $target for ${seconds}s"
  # -timeout: one input taking 20 s is a hang worth reporting. -max_len: room for inputs
  # bigger than libFuzzer's default guess (two CIFAR records are 6 KB).
  cargo +nightly fuzz run "$target" "$scratch/$target" -- \
    -max_total_time="$seconds" -timeout=20 -max_len=8192 -print_final_stats=1 \
    2>&1 | tee "$scratch/$target.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
  summary+=("$target: ${runs:-?} runs in ${seconds}s")
done
echo "== no crash:"
printf '   %s\n' "${summary[@]}"
