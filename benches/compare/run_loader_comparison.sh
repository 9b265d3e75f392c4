#!/usr/bin/env bash
# The stage-1 loader: decoding 500 x 375 JPEGs and making the published stage-1 views, dscl's
# loader (`loader_timing`) against torchvision's transforms in a PyTorch DataLoader
# (`loader_torch.py`), with the same number of workers, PAIRS times one after the other. Makes
# the JPEGs (512, in JPEGS) when the folder is missing. Prints the machine, the workers and the
# load first, then each line and the ratios.
#
#   benches/compare/run_loader_comparison.sh                 # workers = nproc
#   WORKERS=2 PAIRS=3 JPEGS=/tmp/jpegs benches/compare/run_loader_comparison.sh
set -euo pipefail

cd "$(dirname "$0")/../.."
WORKERS="${WORKERS:-$(nproc)}"
PAIRS="${PAIRS:-3}"
JPEGS="${JPEGS:-/tmp/dscl-loader-jpegs}"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --release -p dscl-benches --bin loader_timing
[ -d "$JPEGS" ] || python3 benches/compare/loader_torch.py --make "$JPEGS" --count 512

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' || true
echo "workers: $WORKERS   load: $(cut -d' ' -f1-3 /proc/loadavg)"

LOG="$(mktemp)"
for _ in $(seq "$PAIRS"); do
  "$TARGET/release/loader_timing" --root "$JPEGS" --workers "$WORKERS" --passes 3 | tee -a "$LOG"
  python3 benches/compare/loader_torch.py --root "$JPEGS" --workers "$WORKERS" --passes 3 \
    | tee -a "$LOG"
done

python3 - "$LOG" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
dscl = [float(r["images_per_s"]) for r in rows if r["impl"] == "dscl"]
torch = [float(r["images_per_s"]) for r in rows if r["impl"] == "torch"]
print()
print("| pair | dscl images/s | PyTorch images/s | dscl / PyTorch |")
print("|---|---|---|---|")
for i, (d, t) in enumerate(zip(dscl, torch), 1):
    print(f"| {i} | {d:.1f} | {t:.1f} | {d / t:.2f} |")
PY
