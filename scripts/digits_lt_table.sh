#!/usr/bin/env bash
# The README's "Long-tailed digits" table: DSCL + PBSD (the paper's two stages) against the
# cross-entropy baseline on the built-in UCI digits, long-tailed at imbalance 10 and 100, each
# pair with the same settings and epoch budget: the digits defaults of `runtime run` at
# imbalance 10; batch 32 and 400 epochs at imbalance 100 (300 training images: the defaults'
# 800 steps are too few there). Prints a markdown table; each run's metrics.json stays under
# $OUT (default target/digits-lt).
#
#   scripts/digits_lt_table.sh            # about 12 minutes on 2 cores
#   SEEDS="0 1 2" scripts/digits_lt_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-target/digits-lt}"
SEEDS="${SEEDS:-0 1}"
cargo build --release -p dscl-runtime
RUNTIME=target/release/runtime
mkdir -p "$OUT"

echo "| imbalance | method | seed | top-1 | many | medium | few |"
echo "|---|---|---|---|---|---|---|"
for imb in 10 100; do
  extra=()
  if [ "$imb" = 100 ]; then extra=(--batch-size 32 --epochs 400); fi
  for seed in $SEEDS; do
    for method in dscl ce; do
      dir="$OUT/imb$imb-$method-seed$seed"
      rm -rf "$dir"
      "$RUNTIME" run --imbalance "$imb" --loss "$method" --seed "$seed" "${extra[@]}" --out "$dir" \
        >"$dir.log" 2>&1 || { echo "failed: see $dir.log" >&2; exit 1; }
      python3 - "$dir/metrics.json" "$imb" "$method" "$seed" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
f = lambda v: "-" if v is None else f"{v:.1f}"
name = {"dscl": "DSCL + PBSD", "ce": "cross-entropy"}[sys.argv[3]]
print(f"| {sys.argv[2]} | {name} | {sys.argv[4]} | {f(m['top1'])} | {f(m['many'])} | {f(m['medium'])} | {f(m['few'])} |")
PY
    done
  done
done
