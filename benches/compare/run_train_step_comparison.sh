#!/usr/bin/env bash
# One SGD training step (forward, cross-entropy, backward, update) of ResNet-18 with a CIFAR
# stem at 32x32, batch 128, and of ResNet-50 at 224x224, batch 16: the Rust CPU backend
# (`train_step`) against PyTorch eager float32 (`train_step_torch.py`), same machine, same
# thread count, run one after the other. Prints images/s, peak memory and the ratios.
#
#   benches/compare/run_train_step_comparison.sh          # threads = nproc
#   THREADS=1 STEPS=3 benches/compare/run_train_step_comparison.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
THREADS="${THREADS:-$(nproc)}"
STEPS="${STEPS:-5}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --release -p dscl-benches --bin train_step

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' || true
echo "threads: $THREADS   load: $(cut -d' ' -f1-3 /proc/loadavg)"

LOG="$(mktemp)"
for case in "resnet18-cifar 128 32" "resnet50 16 224"; do
  set -- $case
  "$TARGET/release/train_step" --arch "$1" --batch "$2" --image "$3" --steps "$STEPS" \
    --threads "$THREADS" | tee -a "$LOG"
  python3 benches/compare/train_step_torch.py --arch "$1" --batch "$2" --image "$3" \
    --steps "$STEPS" --threads "$THREADS" | tee -a "$LOG"
done

python3 - "$LOG" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
print()
print("| network | batch | dscl img/s | PyTorch img/s | speed ratio | dscl peak MiB | PyTorch peak MiB | memory ratio |")
print("|---|---|---|---|---|---|---|---|")
for arch in dict.fromkeys(r["arch"] for r in rows):
    d = next(r for r in rows if r["arch"] == arch and r["impl"] == "dscl")
    t = next(r for r in rows if r["arch"] == arch and r["impl"] == "torch")
    di, ti = float(d["images_per_s"]), float(t["images_per_s"])
    dm, tm = float(d["peak_extra_mib"]), float(t["peak_extra_mib"])
    print(f"| {arch} | {d['batch']} | {di:.1f} | {ti:.1f} | {di / ti:.2f}x | {dm:.0f} | {tm:.0f} | {tm / dm:.2f}x |")
PY
