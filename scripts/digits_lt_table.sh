#!/usr/bin/env bash
# The README's "Long-tailed digits" table: DSCL + PBSD (the paper's two stages) against the
# cross-entropy baseline on the built-in UCI digits, long-tailed at imbalance 10 and 100, each
# pair with the same settings and epoch budget: the digits defaults of `runtime run` (batch 64,
# 400 epochs) at imbalance 10; batch 32 and 800 epochs at imbalance 100 (300 training images:
# the defaults give too few steps). Five seeds each: the tail classes have a handful of
# test-relevant images, so one seed swings top-1 by 2-3 points; the table gives every seed and
# the mean. Each cross-entropy run is also followed by cRT (classifier re-training, Kang et al.,
# ICLR 2020: `runtime linear` on its backbone, then `runtime eval`). Prints a markdown table;
# each run's metrics.json stays under $OUT (default target/digits-lt).
#
#   scripts/digits_lt_table.sh            # about 50 minutes on 2 cores (94 beside other work)
#   SEEDS="0 1" scripts/digits_lt_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-target/digits-lt}"
SEEDS="${SEEDS:-0 1 2 3 4}"
cargo build --release -p dscl-runtime
RUNTIME=target/release/runtime
mkdir -p "$OUT"

for imb in 10 100; do
  extra=()
  if [ "$imb" = 100 ]; then extra=(--batch-size 32 --epochs 800); fi
  for seed in $SEEDS; do
    for method in dscl ce; do
      dir="$OUT/imb$imb-$method-seed$seed"
      rm -rf "$dir"
      "$RUNTIME" run --imbalance "$imb" --loss "$method" --seed "$seed" "${extra[@]}" --out "$dir" \
        >"$dir.log" 2>&1 || { echo "failed: see $dir.log" >&2; exit 1; }
    done
    crt="$OUT/imb$imb-crt-seed$seed"
    rm -rf "$crt"
    { "$RUNTIME" linear --checkpoint "$OUT/imb$imb-ce-seed$seed/stage1.safetensors" --out "$crt" &&
      "$RUNTIME" eval --checkpoint "$crt/linear.safetensors" --out "$crt"; } \
      >"$crt.log" 2>&1 || { echo "failed: see $crt.log" >&2; exit 1; }
  done
done

python3 - "$OUT" $SEEDS <<'PY'
import json, os, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
name = {"dscl": "DSCL + PBSD", "ce": "cross-entropy", "crt": "cRT"}
f = lambda v: "-" if v is None else f"{v:.1f}"
print("| imbalance | method | seed | top-1 | many | medium | few |")
print("|---|---|---|---|---|---|---|")
for imb in ("10", "100"):
    for method in ("dscl", "ce", "crt"):
        rows = []
        for seed in seeds:
            m = json.load(open(os.path.join(out, f"imb{imb}-{method}-seed{seed}", "metrics.json")))
            rows.append(m)
            print(f"| {imb} | {name[method]} | {seed} | {f(m['top1'])} | {f(m['many'])} | {f(m['medium'])} | {f(m['few'])} |")
        mean = lambda k: statistics.mean(r[k] for r in rows) if all(r[k] is not None for r in rows) else None
        sd = lambda k: statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0
        print(f"| {imb} | **{name[method]}** | **mean** | **{f(mean('top1'))}** ± {sd('top1'):.1f} "
              f"| {f(mean('many'))} | {f(mean('medium'))} | **{f(mean('few'))}** ± {sd('few'):.1f} |")
PY
