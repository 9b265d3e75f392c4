#!/usr/bin/env bash
# Per-layer training-kernel timings, Rust CPU backend vs PyTorch float32 eager (oneDNN), on every
# distinct convolution shape of ResNet-18 (CIFAR stem, 32x32, batch 128) and torchvision ResNet-50
# (224x224, batch 16), plus batch norm, ReLU, add and max-pool.
#
#   benches/compare/run_conv_comparison.sh              # THREADS=2 ROUNDS=2 REPS=5
#   THREADS=2 ROUNDS=3 REPS=7 benches/compare/run_conv_comparison.sh
#
# Runs `conv_timing` (release) and `conv_torch.py` alternately, one layer group at a time, ROUNDS
# times; each side's time for a kernel is the smallest of its per-round medians (interference
# from other processes only adds time). Prints per-shape ratios torch_ms / dscl_ms (> 1: dscl
# faster) and per-network totals weighted by how often each network runs the shape (the first
# convolution's backward-data is not needed in training and gets weight 0). Logs go to
# <target>/conv-comparison/.
set -euo pipefail

cd "$(dirname "$0")/../.."
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
REPS="${REPS:-5}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
LOGS="$TARGET/conv-comparison"
mkdir -p "$LOGS"
rm -f "$LOGS"/rust.log "$LOGS"/torch.log

cargo build --release -p dscl-benches --bin conv_timing
echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' || true
echo "threads: $THREADS   rounds: $ROUNDS   reps: $REPS   load: $(cut -d' ' -f1-3 /proc/loadavg)"

GROUPS_=("r18 stem" "r18 l1" "r18 l2" "r18 l3" "r18 l4" "r50 stem" "r50 l1" "r50 l2" "r50 l3" "r50 l4")
for round in $(seq "$ROUNDS"); do
  for g in "${GROUPS_[@]}"; do
    "$TARGET/release/conv_timing" --threads "$THREADS" --reps "$REPS" --no-ops --filter "$g" >> "$LOGS/rust.log"
    python3 benches/compare/conv_torch.py --threads "$THREADS" --reps "$REPS" --no-ops --filter "$g" >> "$LOGS/torch.log"
  done
  for g in bn relu add maxpool; do
    "$TARGET/release/conv_timing" --threads "$THREADS" --reps "$REPS" --filter "$g" >> "$LOGS/rust.log"
    python3 benches/compare/conv_torch.py --threads "$THREADS" --reps "$REPS" --filter "$g" >> "$LOGS/torch.log"
  done
  echo "round $round done, load: $(cut -d' ' -f1-3 /proc/loadavg)"
done

python3 - "$LOGS/rust.log" "$LOGS/torch.log" <<'EOF2'
import sys
from collections import defaultdict

def parse(path):
    conv, ops = {}, {}
    for line in open(path):
        p = line.split()
        if not p or p[0].startswith("#"):
            continue
        if p[0] == "conv":
            key = (p[1], p[2])
            v = [float(x) for x in p[-3:]]
            conv[key] = [min(a, b) for a, b in zip(conv.get(key, v), v)] + [int(p[-4])]
        elif p[0] == "op":
            key = (p[1], p[2], p[3])
            ops[key] = min(ops.get(key, float("inf")), float(p[4]))
    return conv, ops

rc, ro = parse(sys.argv[1])
tc, to = parse(sys.argv[2])
print()
print("Per shape, ms (min over rounds of the median of REPS runs); ratio = torch / dscl (> 1: dscl faster)")
print(f"| {'net':3} | {'layer':16} | {'uses':>4} | {'fwd dscl':>8} | {'fwd torch':>9} | {'ratio':>5} "
      f"| {'bwd-data dscl':>13} | {'torch':>7} | {'ratio':>5} | {'bwd-filter dscl':>15} | {'torch':>7} | {'ratio':>5} |")
print("|" + "|".join("---" for _ in range(12)) + "|")
tot = defaultdict(lambda: [0.0] * 6)
for key in rc:
    if key not in tc:
        continue
    r, t = rc[key], tc[key]
    uses = r[3]
    cells = []
    for i in range(3):
        cells += [f"{r[i]:8.2f}", f"{t[i]:9.2f}", f"{t[i] / r[i]:5.2f}"]
        w = 0 if (i == 1 and key[1].startswith("stem")) else uses
        tot[key[0]][2 * i] += w * r[i]
        tot[key[0]][2 * i + 1] += w * t[i]
    print(f"| {key[0]:3} | {key[1]:16} | {uses:4} | " + " | ".join(cells) + " |")
print()
print("Weighted totals (sum over layers of uses x ms; stem backward-data excluded)")
print("| net | pass | dscl ms | torch ms | ratio |")
print("|---|---|---|---|---|")
for net, v in tot.items():
    for i, name in enumerate(["forward", "backward-data", "backward-filter"]):
        print(f"| {net} | {name} | {v[2 * i]:.1f} | {v[2 * i + 1]:.1f} | {v[2 * i + 1] / v[2 * i]:.2f} |")
    rs, ts = v[0] + v[2] + v[4], v[1] + v[3] + v[5]
    print(f"| {net} | all conv | {rs:.1f} | {ts:.1f} | {ts / rs:.2f} |")
print()
print("Other kernels, ms")
print("| net | kernel | part | dscl | torch | ratio |")
print("|---|---|---|---|---|---|")
for key, r in ro.items():
    t = to.get(key)
    if t is not None:
        print(f"| {key[0]} | {key[1]} | {key[2]} | {r:.2f} | {t:.2f} | {t / r:.2f} |")
EOF2
