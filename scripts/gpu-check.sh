#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one run:
#   1. the conformance suite on the GPU (every kernel against the f64 reference);
#   2. `runtime verify --backend cuda` on the shipped PyTorch float64 vectors;
#   3. the DSCL + PBSD loss step alone (B 256, d 128, C 5, K 8192 and 65536), dscl against the
#      same math in PyTorch on the same GPU (benches/compare/loss_torch.py --device cuda);
#   4. a ResNet-50 training step (224 px, batch 64: forward, cross-entropy, backward, SGD),
#      dscl against torchvision in PyTorch eager on the same GPU, both fp32 (TF32 off);
# then a table of images/s (or ms per step) and the ratios. Meant to finish within 6 minutes.
#
# A GPU machine may have no Rust toolchain, so the binaries are built where cargo is, into
# target/gpu-check (stripped, small enough to copy along), and the script runs whatever is
# there:
#
#   scripts/gpu-check.sh build     # here: build the four binaries into target/gpu-check
#   scripts/gpu-check.sh           # on the GPU machine (builds first when cargo is present)
#
# CUDA's libraries are loaded at run time: the driver's libcuda, and cuBLAS and NVRTC from the
# CUDA toolkit or from PyTorch's `nvidia-*` wheels, found here and linked under plain names
# into a scratch directory on LD_LIBRARY_PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=target/gpu-check

build() {
  set -e
  cargo build --release -p dscl-runtime --bin runtime
  cargo build --release -p dscl-benches --bin train_step --bin loss_timing
  local conformance
  conformance=$(cargo test --release -p dscl-tests --test conformance_cuda --no-run \
    --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance_cuda":
        print(m["executable"])')
  local target
  target=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  mkdir -p "$OUT_DIR"
  for bin in runtime train_step loss_timing; do
    strip -o "$OUT_DIR/$bin" "$target/release/$bin"
  done
  strip -o "$OUT_DIR/conformance_cuda" "$conformance"
  ls -l "$OUT_DIR"
  set +e
}

if [ "${1:-}" = build ]; then
  build
  exit 0
fi
if command -v cargo >/dev/null 2>&1; then
  build || { echo "gpu-check: build failed" >&2; exit 1; }
fi
for bin in runtime train_step loss_timing conformance_cuda; do
  [ -x "$OUT_DIR/$bin" ] || { echo "gpu-check: $OUT_DIR/$bin missing: run '$0 build' where cargo is" >&2; exit 1; }
done

# Plain library names (libnvrtc.so, libcublas.so, ...) for whatever versions are installed.
LIBS=$(mktemp -d)
trap 'rm -rf "$LIBS"' EXIT
SEARCH=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
while IFS= read -r dir; do SEARCH+=("$dir"); done < <(python3 - <<'PY' 2>/dev/null
import glob, os, importlib.util
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations if spec else []):
    for lib in glob.glob(os.path.join(root, "*", "lib")):
        print(lib)
PY
)
for name in nvrtc nvrtc-builtins cublas cublasLt; do
  for dir in "${SEARCH[@]}"; do
    found=$(ls "$dir"/lib$name.so* 2>/dev/null | sort -V | tail -1)
    if [ -n "$found" ]; then
      ln -sf "$found" "$LIBS/lib$name.so"
      break
    fi
  done
done
export LD_LIBRARY_PATH="$LIBS:$(IFS=:; echo "${SEARCH[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true
ls -l "$LIBS"

status=0
LOG=$(mktemp)
run() {
  echo "== $*"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    echo "gpu-check: exit $rc from: $*"
    status=1
  fi
}

run timeout 120 "$OUT_DIR/conformance_cuda" --test-threads 1
run timeout 60 "$OUT_DIR/runtime" verify --backend cuda tests/data/dscl_vectors_small.json
run timeout 90 "$OUT_DIR/loss_timing" --backend cuda --reps 20 8192 65536
run timeout 90 python3 benches/compare/loss_torch.py --device cuda --ks 8192 65536 \
  --variants official --reps 20
run timeout 60 "$OUT_DIR/train_step" --backend cuda --arch resnet50 --batch 64 --image 224 --steps 5
run timeout 60 python3 benches/compare/train_step_torch.py --device cuda --arch resnet50 \
  --batch 64 --image 224 --steps 5

python3 - "$LOG" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
def pick(impl, **kv):
    return next((r for r in rows if r.get("impl") == impl and all(r.get(k) == v for k, v in kv.items())), None)
print("\n| measure | dscl (CUDA) | PyTorch (CUDA) | dscl / PyTorch speed |")
print("|---|---|---|---|")
for k in ("8192", "65536"):
    d, t = pick("dscl", K=k), pick("torch", K=k)
    if d and t:
        dm, tm = float(d["ms_per_step"]), float(t["ms_per_step"])
        print(f"| DSCL + PBSD loss step, K={k} (ms) | {dm:.2f} | {tm:.2f} | {tm / dm:.2f}x |")
d, t = pick("dscl", arch="resnet50"), pick("torch", arch="resnet50")
if d and t:
    di, ti = float(d["images_per_s"]), float(t["images_per_s"])
    print(f"| ResNet-50 step, batch 64, 224 px (images/s) | {di:.1f} | {ti:.1f} | {di / ti:.2f}x |")
PY
exit $status
