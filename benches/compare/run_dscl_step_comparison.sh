#!/usr/bin/env bash
# The complete stage-1 step (DSCL + PBSD) at the CPU training shapes: ResNet-32 and ResNet-18
# with the CIFAR stem, 32-px queries and keys, 5 crops of 16 px, K 4096, batch 32 and 128; the
# Rust CPU backend (`dscl_step`) against PyTorch eager (`dscl_step_torch.py`), same machine and
# thread count, one after the other. Prints the machine, the thread count and the load first,
# then each side's line and a table of medians, the ratio (PyTorch time / dscl time), the
# achieved convolution FLOP rate and the extra memory.
#
#   benches/compare/run_dscl_step_comparison.sh              # threads = nproc
#   THREADS=2 STEPS=10 benches/compare/run_dscl_step_comparison.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
THREADS="${THREADS:-$(nproc)}"
STEPS="${STEPS:-10}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --release -p dscl-benches --bin dscl_step

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\)|Flags)' | cut -c1-200 || true
echo "threads: $THREADS   load: $(cut -d' ' -f1-3 /proc/loadavg)"

LOG="$(mktemp)"
for arch in resnet32 resnet18-cifar; do
  for batch in 32 128; do
    args=(--arch "$arch" --batch "$batch" --image 32 --crop 16 --queue 4096 --threads "$THREADS"
      --warmup 2 --steps "$STEPS")
    "$TARGET/release/dscl_step" "${args[@]}" | tee -a "$LOG"
    python3 benches/compare/dscl_step_torch.py "${args[@]}" | tee -a "$LOG"
  done
done

python3 - "$LOG" <<'PY'
import re, sys
# Convolution FLOPs of one forward pass of a 32-px image (16-px crops: a quarter); a step is
# three of them for the query and crop passes (forward and backward) and one for the key.
FWD32 = {"resnet32": 0.13825e9, "resnet18-cifar": 1.11084e9}
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
print()
print("| network | batch | dscl s | PyTorch s | PyTorch / dscl time | dscl GFLOP/s | dscl / PyTorch extra MiB |")
print("|---|---|---|---|---|---|---|")
for d in (r for r in rows if r["impl"] == "dscl"):
    t = next(r for r in rows if r["impl"] == "torch" and r["arch"] == d["arch"] and r["batch"] == d["batch"])
    ds, ts = float(d["median_s"]), float(t["median_s"])
    b, f = int(d["batch"]), FWD32[d["arch"]]
    flops = b * (3 * f + f + 5 * 3 * f / 4)
    print(f"| {d['arch']} | {b} | {ds:.4f} | {ts:.4f} | {ts / ds:.2f} | {flops / ds / 1e9:.0f} | "
          f"{float(d['peak_extra_mib']):.0f} / {float(t['peak_extra_mib']):.0f} |")
PY
