#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one run:
#   1. the conformance suite on the GPU (every kernel against the f64 reference);
#   2. `runtime verify --backend cuda` on the shipped PyTorch float64 vectors, and `runtime run`
#      on the built-in digits at fp32 and TF32 against the CPU backend's losses;
#   3. one stage-1 step of DSCL + PBSD (ResNet-50, 224 px, batch 64, C 5 crops of 64 px,
#      K 65536: momentum update, query / key / crop passes, both losses, backward, SGD, enqueue),
#      dscl_step against the same step in PyTorch eager (benches/compare/dscl_step_torch.py);
#   4. the DSCL + PBSD loss step alone (B 256, d 128, C 5, K 8192 and 65536), dscl against the
#      same math in PyTorch on the same GPU (benches/compare/loss_torch.py --device cuda);
#   5. a ResNet-50 classifier step (224 px, batch 64: forward, cross-entropy, backward, SGD),
#      dscl against the same network in PyTorch eager on the same GPU;
# all fp32 with TF32 off on both sides, and step 3 again with TF32 on both sides (dscl
# --precision tf32, PyTorch's two allow_tf32 flags); then a table of images/s (or ms per step)
# and the ratios.
#
# Meant to finish within 6 minutes on an H200. Every run has its own `timeout`, and all the runs
# share one deadline (RUN_BUDGET_S, 330 s after the set-up): a run gets at most what is left, and
# one that would start with under MIN_RUN_S left is skipped (the stage-1 step runs right after
# the checks, so a short budget drops the older rows 4 and 5 first). A benchmark that times out
# or is skipped is reported as a row of the table; only a failed check or a benchmark that
# exits with an error makes the script fail. The direct-convolution CUDA kernels may be slow,
# so dscl_step runs 1 warm-up and 3 timed steps (it prints each warm-up step's time on stderr,
# so even a timeout shows how long one step took).
#
# A GPU machine may have no Rust toolchain, so the binaries are built where cargo is, into
# target/gpu-check (stripped, small enough to copy along), and the script runs whatever is
# there:
#
#   scripts/gpu-check.sh build     # here: build the five binaries into target/gpu-check
#   scripts/gpu-check.sh           # on the GPU machine (builds first when cargo is present)
#
# CUDA's libraries are loaded at run time: the driver's libcuda, and cuBLAS, NVRTC and cuDNN
# from the CUDA toolkit or from PyTorch's `nvidia-*` wheels, found here and linked under plain
# names into a scratch directory on LD_LIBRARY_PATH (every wheel's lib directory is on the path
# too, for the libraries those load in turn, such as cuDNN 9's sub-libraries).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=target/gpu-check

build() {
  set -e
  cargo build --release -p dscl-runtime --bin runtime
  cargo build --release -p dscl-benches --bin train_step --bin loss_timing --bin dscl_step
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
  for bin in runtime train_step loss_timing dscl_step; do
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
for bin in runtime train_step loss_timing dscl_step conformance_cuda; do
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
for name in nvrtc nvrtc-builtins cublas cublasLt cudnn; do
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
RUN_BUDGET_S=${RUN_BUDGET_S:-330}
MIN_RUN_S=${MIN_RUN_S:-20}
DEADLINE=$((SECONDS + RUN_BUDGET_S))

# The seconds a run may take: its own cap, or what is left before the deadline if less.
limit() {
  local left=$((DEADLINE - SECONDS))
  echo $(($1 < left ? $1 : left))
}

# check CAP CMD...: a correctness check; any non-zero exit (a timeout too) fails the script.
check() {
  local cap
  cap=$(limit "$1")
  shift
  echo "== $* (timeout ${cap}s)"
  if [ "$cap" -lt "$MIN_RUN_S" ]; then
    echo "gpu-check: no time left for: $*"
    status=1
    return
  fi
  timeout "$cap" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" != 0 ]; then
    echo "gpu-check: exit $rc from: $*"
    status=1
  fi
}

# bench ROW IMPL CAP CMD...: a benchmark whose result line lands in the table. A timeout or a
# skip becomes a line `impl=IMPL row=ROW status=...` that the table shows in the row's place.
bench() {
  local row=$1 impl=$2 cap
  cap=$(limit "$3")
  shift 3
  echo "== $* (timeout ${cap}s)"
  if [ "$cap" -lt "$MIN_RUN_S" ]; then
    echo "impl=$impl row=$row status=skipped" | tee -a "$LOG"
    return
  fi
  timeout "$cap" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" = 124 ]; then
    echo "impl=$impl row=$row status=timeout limit_s=$cap" | tee -a "$LOG"
  elif [ "$rc" != 0 ]; then
    echo "impl=$impl row=$row status=failed exit=$rc" | tee -a "$LOG"
    echo "gpu-check: exit $rc from: $*"
    status=1
  fi
}

check 120 "$OUT_DIR/conformance_cuda" --test-threads 1
check 60 "$OUT_DIR/runtime" verify --backend cuda tests/data/dscl_vectors_small.json
# End to end on the built-in digits (loader, both stages, evaluation, checkpoints): the first
# stage-1 losses on CUDA follow the CPU backend's for the same seed, as runtime/tests/wgpu_cli.rs
# checks for wgpu; at TF32 they only need to stay close.
check 120 python3 - "$OUT_DIR/runtime" <<'PY'
import json, math, subprocess, sys, tempfile
runtime = sys.argv[1]
quick = ["--epochs", "2", "--batch-size", "32", "--queue", "64", "--crops", "2",
         "--linear-epochs", "1", "--workers", "2"]
def run(*backend):
    out = tempfile.mkdtemp(prefix="dscl-digits-")
    done = subprocess.run([runtime, "run", *backend, "--out", out, *quick],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"runtime run {' '.join(backend)} failed:\n{done.stdout}{done.stderr}")
    steps = [json.loads(l) for l in open(f"{out}/log.jsonl")]
    losses = [s["loss"] for s in steps if s.get("kind") == "step" and s.get("phase") == "stage1"]
    top1 = json.load(open(f"{out}/metrics.json"))["top1"]
    print(f"{' '.join(backend)}: {len(losses)} stage-1 steps, first losses "
          f"{[round(x, 5) for x in losses[:3]]}, top-1 {top1}")
    return losses, top1
cpu, _ = run("--backend", "cpu")
failed = False
for precision, tol in (("fp32", 1e-3), ("tf32", 1e-2)):
    gpu, top1 = run("--backend", "cuda", "--precision", precision)
    ok = (len(gpu) == len(cpu) and math.isfinite(top1)
          and all(abs(g - c) <= tol * max(abs(c), 1.0) for g, c in zip(gpu[:3], cpu[:3])))
    print(f"cuda {precision} against cpu, first 3 losses within {tol} relative: "
          f"{'yes' if ok else 'NO'}")
    failed |= not ok
sys.exit(1 if failed else 0)
PY
STAGE1=(--arch resnet50 --batch 64 --image 224 --crop 64 --crops 5 --queue 65536 --classes 1000)
bench stage1 dscl 100 "$OUT_DIR/dscl_step" --backend cuda "${STAGE1[@]}" --warmup 1 --steps 3
bench stage1 torch 90 python3 benches/compare/dscl_step_torch.py --device cuda \
  --precision fp32 "${STAGE1[@]}" --warmup 3 --steps 10
bench stage1-tf32 dscl 60 "$OUT_DIR/dscl_step" --backend cuda --precision tf32 "${STAGE1[@]}" \
  --warmup 1 --steps 3
bench stage1-tf32 torch 60 python3 benches/compare/dscl_step_torch.py --device cuda \
  --precision tf32 "${STAGE1[@]}" --warmup 3 --steps 10
bench loss dscl 90 "$OUT_DIR/loss_timing" --backend cuda --reps 20 8192 65536
bench loss torch 90 python3 benches/compare/loss_torch.py --device cuda --ks 8192 65536 \
  --variants official --reps 20
bench classifier dscl 60 "$OUT_DIR/train_step" --backend cuda --arch resnet50 --batch 64 \
  --image 224 --steps 5
bench classifier torch 60 python3 benches/compare/train_step_torch.py --device cuda \
  --arch resnet50 --batch 64 --image 224 --steps 5

python3 - "$LOG" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
def pick(impl, row, **kv):
    # kv: fields the result line must have (a value of None: a field it must not have).
    found = next((r for r in rows if r.get("impl") == impl and "status" not in r
                  and all(r.get(k) == v for k, v in kv.items())), None)
    if found:
        return found, None
    why = next((r for r in rows if r.get("impl") == impl and r.get("row") == row), None)
    if why is None:
        return None, "no result"
    if why["status"] == "timeout":
        return None, f"timed out ({why['limit_s']} s)"
    return None, why["status"]
def line(label, row, key, fmt, faster_when_larger, **kv):
    (d, d_why), (t, t_why) = pick("dscl", row, **kv), pick("torch", row, **kv)
    dv = float(d[key]) if d else None
    tv = float(t[key]) if t else None
    ratio = "-"
    if dv and tv:
        ratio = f"{dv / tv if faster_when_larger else tv / dv:.2f}x"
    cell = lambda v, why: fmt.format(v) if v is not None else why
    print(f"| {label} | {cell(dv, d_why)} | {cell(tv, t_why)} | {ratio} |")
print("\n| measure | dscl (CUDA) | PyTorch (CUDA) | dscl / PyTorch speed |")
print("|---|---|---|---|")
line("Stage-1 step (DSCL + PBSD), ResNet-50, batch 64, 224 px, C 5, K 65536, fp32 (images/s)",
     "stage1", "images_per_s", "{:.1f}", True, arch="resnet50", queue="65536", precision="fp32")
line("Stage-1 step, the same (ms per step)",
     "stage1", "ms_per_step", "{:.1f}", False, arch="resnet50", queue="65536", precision="fp32")
line("Stage-1 step, the same with TF32 (images/s)",
     "stage1-tf32", "images_per_s", "{:.1f}", True, arch="resnet50", queue="65536",
     precision="tf32")
for k in ("8192", "65536"):
    line(f"DSCL + PBSD loss step, K={k} (ms)", "loss", "ms_per_step", "{:.2f}", False, K=k)
line("ResNet-50 classifier step, batch 64, 224 px (images/s)",
     "classifier", "images_per_s", "{:.1f}", True, arch="resnet50", batch="64", queue=None)
PY
exit $status
