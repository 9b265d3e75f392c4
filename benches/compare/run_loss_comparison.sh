#!/usr/bin/env bash
# The loss step (DSCL + PBSD, forward + backward, B=256 d=128 C=5) on the Rust CPU backend vs
# PyTorch float32 eager, at K=8192 and K=65536, same machine, same thread count.
#
#   benches/compare/run_loss_comparison.sh          # threads = nproc
#   THREADS=1 benches/compare/run_loss_comparison.sh
#
# Runs: `cargo bench -p dscl-benches --bench loss` (criterion, ms/step), the release binary
# `loss_memory` (peak extra resident memory of one step, and DSCL / PBSD timed apart), and
# `benches/compare/loss_torch.py` (checks its math against tests/data/dscl_vectors_small.json,
# then the same timings and memory measure). Prints a table; logs go to
# <target>/loss-comparison/. Run it on a quiet machine: timings of a busy one mean little.
set -euo pipefail

cd "$(dirname "$0")/../.."
THREADS="${THREADS:-$(nproc)}"
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
TARGET="$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
LOGS="$TARGET/loss-comparison"
mkdir -p "$LOGS"

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
free -g | head -2
echo "threads: $THREADS   load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== cargo bench -p dscl-benches --bench loss"
cargo bench -p dscl-benches --bench loss 2>&1 | tee "$LOGS/rust_bench.log"

echo "== loss_memory (release)"
cargo build --release -p dscl-benches --bin loss_memory
"$TARGET/release/loss_memory" --parts 3 8192 65536 2>&1 | tee "$LOGS/rust_memory.log"

echo "== loss_torch.py"
python3 benches/compare/loss_torch.py --threads "$THREADS" --memory --parts 2>&1 \
  | tee "$LOGS/torch.log"

echo "== summary"
python3 - "$TARGET/criterion" "$LOGS" <<'EOF'
import json, os, re, sys

criterion, logs = sys.argv[1], sys.argv[2]

def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))

def rows(path):
    with open(path) as f:
        return [fields(l) for l in f if "K" in fields(l)]

rust_mem = {r["K"]: r for r in rows(f"{logs}/rust_memory.log") if "peak_extra_mib" in r}
rust_parts = {(r["K"], r["part"]): float(r["ms_per_step"]) for r in rows(f"{logs}/rust_memory.log") if "part" in r}
torch_rows = rows(f"{logs}/torch.log")
torch_time = {(r["K"], r["variant"]): r for r in torch_rows if "part" not in r and "min_ms" in r}
torch_mem = {(r["K"], r["variant"]): r for r in torch_rows if "peak_extra_mib" in r}
torch_parts = {(r["K"], r["variant"], r["part"]): float(r["ms_per_step"]) for r in torch_rows if "part" in r}

def rust_ms(k):
    est = os.path.join(criterion, "dscl_pbsd_step", f"K={k}", "new", "estimates.json")
    with open(est) as f:
        e = json.load(f)
    return e["mean"]["point_estimate"] / 1e6, e["mean"]["confidence_interval"]

print("| K | PyTorch variant | Rust ms/step | PyTorch ms/step | speed-up | Rust peak MiB | PyTorch peak MiB | memory ratio |")
print("|---|---|---|---|---|---|---|---|")
for k in sorted({k for k, _ in torch_time}, key=int):
    ms, ci = rust_ms(k)
    for variant in ("official", "lean"):
        if (k, variant) not in torch_time:
            continue
        t = float(torch_time[(k, variant)]["ms_per_step"])
        rm = float(rust_mem[k]["peak_extra_mib"])
        tm = float(torch_mem[(k, variant)]["peak_extra_mib"])
        print(f"| {k} | {variant} | {ms:.1f} ({ci['lower_bound'] / 1e6:.1f}-{ci['upper_bound'] / 1e6:.1f}) "
              f"| {t:.1f} | {t / ms:.2f}x | {rm:.1f} | {tm:.1f} | {tm / rm:.1f}x |")
print()
print("Parts (ms per forward+backward; Rust from loss_memory --parts, PyTorch from --parts):")
print("| K | part | Rust | PyTorch official | PyTorch lean |")
print("|---|---|---|---|---|")
for (k, part), ms in sorted(rust_parts.items(), key=lambda x: (int(x[0][0]), x[0][1])):
    if part == "total":
        continue
    o = torch_parts.get((k, "official", part), float("nan"))
    l = torch_parts.get((k, "lean", part), float("nan"))
    print(f"| {k} | {part} | {ms:.1f} | {o:.1f} | {l:.1f} |")
print()
print("Same inputs, same losses (float32): K, Rust dscl / pbsd, PyTorch official dscl / pbsd")
for k, r in sorted(rust_mem.items(), key=lambda x: int(x[0])):
    t = torch_time.get((k, "official"))
    if t:
        dd = abs(float(r["dscl_loss"]) - float(t["dscl_loss"]))
        dp = abs(float(r["pbsd_loss"]) - float(t["pbsd_loss"]))
        print(f"  K={k}: {r['dscl_loss']} / {r['pbsd_loss']} vs {t['dscl_loss']} / {t['pbsd_loss']}"
              f"  (|diff| {dd:.1e} / {dp:.1e})")
EOF
