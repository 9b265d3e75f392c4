#!/usr/bin/env bash
# The wgpu backend against the CPU backend in one run on the same machine: GEMM GFLOP/s on the
# square and DSCL-loss shapes (criterion, `benches/benches/gemm.rs`), and one SGD step of
# ResNet-32 on CIFAR-sized input, batch 128 (`train_step`). Without a GPU the wgpu side runs on
# whatever adapter wgpu finds (Mesa's lavapipe here: Vulkan on the same CPU cores).
#
#   benches/compare/run_wgpu_comparison.sh
#   STEPS=5 BATCH=128 benches/compare/run_wgpu_comparison.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS="${STEPS:-3}"
BATCH="${BATCH:-128}"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --release -p dscl-benches --bin train_step

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' || true
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

cargo bench -p dscl-benches --bench gemm 2>&1 | grep -E "^gemm|thrpt|on " || true
python3 - "$TARGET/criterion" <<'PY'
import json, os, sys
root = sys.argv[1]
shapes = {}
for group in sorted(os.listdir(root)):
    if not group.startswith("gemm_"):
        continue
    for shape in os.listdir(os.path.join(root, group)):
        est = os.path.join(root, group, shape, "new", "estimates.json")
        bench = os.path.join(root, group, shape, "new", "benchmark.json")
        if not os.path.exists(est):
            continue
        mean_ns = json.load(open(est))["mean"]["point_estimate"]
        flops = json.load(open(bench))["throughput"]["Elements"]
        kind = "wgpu" if group == "gemm_wgpu" else "cpu"
        shapes.setdefault(shape, {})[kind] = flops / mean_ns
print()
print("| shape | cpu GFLOP/s | wgpu GFLOP/s | wgpu / cpu |")
print("|---|---|---|---|")
for shape, v in sorted(shapes.items()):
    c, w = v.get("cpu"), v.get("wgpu")
    ratio = f"{w / c:.2f}" if c and w else "-"
    f = lambda x: f"{x:.1f}" if x else "-"
    print(f"| {shape} | {f(c)} | {f(w)} | {ratio} |")
PY

echo
LOG="$(mktemp)"
for backend in cpu wgpu; do
  "$TARGET/release/train_step" --backend "$backend" --arch resnet32 --batch "$BATCH" --image 32 \
    --steps "$STEPS" | tee -a "$LOG"
done
python3 - "$LOG" <<'PY'
import re, sys
rows = {r["backend"]: r for r in (dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]))
        if "backend" in r}
c, w = rows["cpu"], rows["wgpu"]
print()
print("| ResNet-32 step | device | img/s | median s |")
print("|---|---|---|---|")
for r in (c, w):
    print(f"| {r['backend']} | {r['device']} | {r['images_per_s']} | {r['median_s']} |")
print(f"wgpu / cpu speed: {float(w['images_per_s']) / float(c['images_per_s']):.2f}")
PY
