#!/usr/bin/env bash
# The CUDA backend's check on a GPU machine, in one run, every check its own process and its own
# row of the closing table:
#   1. `runtime verify --backend cuda` on the shipped PyTorch float64 vectors;
#   2. the conformance suite on the GPU (every kernel against the f64 reference), one process per
#      family of tests/tests/conformance_cuda.rs (the families are read from the binary's
#      `--list`; each runs as `--exact NAME --nocapture --test-threads 1`), so a sticky device
#      fault, an abort in a Drop or a hang costs that family's row, not the run; among them
#      `nccl_world_of_one`, the NCCL collective of `--distributed` CUDA runs at world size one,
#      which prints the time of a ResNet-50-sized all-reduce through it;
#   3. `runtime run` on the built-in digits: the CPU backend, then CUDA at fp32 and at TF32, whose
#      first stage-1 losses must follow the CPU backend's (three rows);
#   4. one stage-1 step of DSCL + PBSD (ResNet-50, 224 px, batch 64, C 5 crops of 64 px,
#      K 65536: momentum update, query / key / crop passes, both losses, backward, SGD, enqueue),
#      dscl_step against the same step in PyTorch eager (benches/compare/dscl_step_torch.py),
#      at fp32 (TF32 off on both sides) and again at TF32 (dscl --precision tf32, PyTorch's two
#      allow_tf32 flags);
#   5. the DSCL + PBSD loss step alone (B 256, d 128, C 5, K 8192 and 65536), dscl against the
#      same math in PyTorch on the same GPU (benches/compare/loss_torch.py --device cuda);
#   6. a ResNet-50 classifier step (224 px, batch 64: forward, cross-entropy, backward, SGD),
#      dscl against the same network in PyTorch eager (train_step_torch.py, which needs
#      torchvision: without it that row is `skipped (no torchvision)`, not a failure);
# then a table of images/s (or ms per step) and the ratios, and a table of every row (check,
# result, seconds). Every test process gets DSCL_REQUIRE_CUDA=1: a CUDA test fails rather than
# skips where there is no usable GPU.
#
# Results: pass, fail (a non-zero exit, an abort, or a check that found no time left), timeout
# (its cap ran out; SIGTERM, SIGKILL 5 s later), skipped (a benchmark that found no time left,
# or a PyTorch row without torchvision). The script exits non-zero if any row failed or timed
# out. Each row's result is also printed as soon as it ends, so a cut-off run still shows them.
#
# Time. Meant to finish within 6 minutes on an H200: the set-up (versions below, the library
# links) takes a few seconds, then every run has its own `timeout` and all share one deadline,
# RUN_BUDGET_S (330 s) from the first run on; a run gets at most what is left, and one that would
# start with under MIN_RUN_S (benchmarks 20 s) or MIN_CHECK_S (checks 10 s) left is not run. The
# correctness rows come first and may use at most CHECK_BUDGET_S (200 s) of it: verify 60 s, each
# conformance family FAMILY_S (60 s), each digits run 60 s. A healthy family should take a few
# seconds (one CUDA context, one NVRTC compile of the kernels, cuBLAS/cuDNN set-up, the cases),
# so the 19 families plus verify and the digits should need about 2 minutes, leaving the
# benchmarks 130 s at the least and about 200 s normally; the stage-1 pair runs first (dscl 100 s,
# PyTorch 90 s), so a short budget drops the TF32, loss and classifier rows first. The
# direct-convolution CUDA kernels may be slow, so dscl_step runs 1 warm-up and 3 timed steps (it
# prints each warm-up step's time on stderr, so even a timeout shows how long one step took).
#
# A GPU machine may have no Rust toolchain, so the binaries are built where cargo is, into
# target/gpu-check (stripped; at most 64 MiB, to be copied along), and the script runs whatever
# is there:
#
#   scripts/gpu-check.sh build     # here: build the five binaries into target/gpu-check
#   scripts/gpu-check.sh           # on the GPU machine (builds first when cargo is present)
#
# `build` prints the newest glibc symbol version the binaries need and writes it to
# target/gpu-check/GLIBC_REQUIRED; on the GPU machine the script refuses to run (exit 1, before
# any run) when the machine's glibc is older.
#
# CUDA's libraries are loaded at run time: the driver's libcuda, and cuBLAS, NVRTC and cuDNN
# from the CUDA toolkit or from PyTorch's `nvidia-*` wheels, found here and linked under plain
# names into a scratch directory that goes on LD_LIBRARY_PATH for dscl's binaries only (every
# wheel's lib directory follows it, for the libraries those load in turn, such as cuDNN 9's
# sub-libraries). PyTorch runs with the environment the script was started with, so it loads its
# own wheels as it would anywhere else. The first lines of the output say what was found: the
# GPU, its driver and the CUDA version that driver supports, the files behind each link and the
# versions those libraries report, glibc, torch and torchvision.
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.." || exit 1
OUT_DIR=target/gpu-check
BINS=(runtime train_step loss_timing dscl_step conformance_cuda)
MAX_CARRY_MIB=64

build() {
  cargo build --release -p dscl-runtime --bin runtime || return 1
  cargo build --release -p dscl-benches --bin train_step --bin loss_timing --bin dscl_step \
    || return 1
  local conformance
  conformance=$(cargo test --release -p dscl-tests --test conformance_cuda --no-run \
    --message-format=json-render-diagnostics | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "conformance_cuda":
        print(m["executable"])') || return 1
  [ -n "$conformance" ] || { echo "gpu-check: no conformance_cuda test binary" >&2; return 1; }
  local target
  target=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || return 1
  mkdir -p "$OUT_DIR" || return 1
  for bin in runtime train_step loss_timing dscl_step; do
    strip -o "$OUT_DIR/$bin" "$target/release/$bin" || return 1
  done
  strip -o "$OUT_DIR/conformance_cuda" "$conformance" || return 1
  ls -l "$OUT_DIR"

  # The newest glibc symbol version any of the binaries needs: a machine with an older glibc
  # cannot run them.
  local paths=() bin glibc bytes
  for bin in "${BINS[@]}"; do paths+=("$OUT_DIR/$bin"); done
  glibc=$(for bin in "${paths[@]}"; do
      if command -v objdump >/dev/null 2>&1; then objdump -T "$bin"; else readelf -V --dyn-syms "$bin"; fi
    done | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/^GLIBC_//' | sort -Vu | tail -1)
  [ -n "$glibc" ] || { echo "gpu-check: found no GLIBC_ symbol versions in the binaries" >&2; return 1; }
  echo "$glibc" > "$OUT_DIR/GLIBC_REQUIRED" || return 1
  echo "gpu-check: the binaries need glibc $glibc or newer (their newest symbol version is" \
    "GLIBC_$glibc; written to $OUT_DIR/GLIBC_REQUIRED)"
  bytes=$(stat -c %s "${paths[@]}" | awk '{ s += $1 } END { print s }')
  awk -v b="$bytes" -v n="${#paths[@]}" -v max="$MAX_CARRY_MIB" 'BEGIN {
    printf "gpu-check: %d binaries, %.1f MiB in all (limit %d MiB)\n", n, b / 1048576, max }'
  if [ "$bytes" -gt $((MAX_CARRY_MIB * 1048576)) ]; then
    echo "gpu-check: the binaries exceed $MAX_CARRY_MIB MiB: too big to carry to the GPU machine" >&2
    return 1
  fi
}

case "${1:-}" in
  build)
    build
    exit $?
    ;;
  "") ;;
  *)
    echo "usage: $0 [build]" >&2
    exit 2
    ;;
esac

# The environment the script was started with is what PyTorch runs under: nothing below changes
# LD_LIBRARY_PATH; dscl's binaries get OUR_LD_LIBRARY_PATH through `env`.
if [ -n "${LD_LIBRARY_PATH+set}" ]; then START_LD="'$LD_LIBRARY_PATH'"; else START_LD="(unset)"; fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LIBS="$WORK/libs"
mkdir -p "$LIBS"

# Plain library names (libnvrtc.so, libcublas.so, ...) for whatever versions are installed.
SEARCH=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
while IFS= read -r dir; do SEARCH+=("$dir"); done < <(python3 - <<'PY' 2>/dev/null
import glob, os, importlib.util
spec = importlib.util.find_spec("nvidia")
for root in (spec.submodule_search_locations if spec else []):
    for lib in glob.glob(os.path.join(root, "*", "lib")):
        print(lib)
PY
)
for name in nvrtc nvrtc-builtins cublas cublasLt cudnn nccl; do
  for dir in "${SEARCH[@]}"; do
    # shellcheck disable=SC2012 # library file names are plain
    found=$(ls "$dir"/lib$name.so* 2>/dev/null | sort -V | tail -1)
    if [ -n "$found" ]; then
      ln -sf "$found" "$LIBS/lib$name.so"
      break
    fi
  done
done
OUR_LD_LIBRARY_PATH="$LIBS:$(IFS=:; echo "${SEARCH[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
export DSCL_REQUIRE_CUDA=1

# What this run will use, first of all (before any build, any check).
echo "== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "GPU, driver: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | paste -sd ';')"
  cuda=$(nvidia-smi 2>/dev/null | grep -oE 'CUDA Version: *[0-9.]+' | grep -oE '[0-9.]+$')
  [ -n "$cuda" ] || cuda="not found (no \"CUDA Version\" in the header of nvidia-smi)"
  echo "CUDA version the driver supports: $cuda"
else
  echo "GPU, driver: not found (no nvidia-smi)"
  echo "CUDA version the driver supports: not found (no nvidia-smi)"
fi
machine_glibc=$( (ldd --version 2>/dev/null || true) | head -1 | awk '{ print $NF }')
[ -n "$machine_glibc" ] || machine_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $NF }')
need_glibc=$(cat "$OUT_DIR/GLIBC_REQUIRED" 2>/dev/null)
echo "glibc: ${machine_glibc:-not found}; the binaries need ${need_glibc:-"? (no $OUT_DIR/GLIBC_REQUIRED)"}"
echo "LD_LIBRARY_PATH at start (PyTorch's): $START_LD"
# The files dscl's binaries will load (the plain names come first in cudarc's search), and what
# the libraries themselves say.
env LD_LIBRARY_PATH="$OUR_LD_LIBRARY_PATH" python3 - "$LIBS" <<'PY' || echo "library versions: python3 failed"
import ctypes, os, sys
libs = sys.argv[1]
def ask(label, name, query):
    path = os.path.join(libs, name)
    if not os.path.lexists(path):
        print(f"{label}: not found")
        return
    real = os.path.realpath(path)
    try:
        said = query(ctypes.CDLL(real))
    except Exception as e:  # a library that does not load, or lacks the entry point
        said = f"could not ask it: {e}"
    print(f"{label}: {real} ({said})")
def nvrtc(lib):
    major, minor = ctypes.c_int(), ctypes.c_int()
    rc = lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"nvrtcVersion {major.value}.{minor.value}" if rc == 0 else f"nvrtcVersion error {rc}"
def cublas(lib):
    parts = []
    for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL; needs no handle
        value = ctypes.c_int()
        rc = lib.cublasGetProperty(prop, ctypes.byref(value))
        if rc != 0:
            return f"cublasGetProperty error {rc}"
        parts.append(str(value.value))
    return "cublasGetProperty " + ".".join(parts)
def cublaslt(lib):
    lib.cublasLtGetVersion.restype = ctypes.c_size_t
    return f"cublasLtGetVersion {lib.cublasLtGetVersion()}"
def cudnn(lib):
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    v = lib.cudnnGetVersion()
    # cuDNN 9 encodes major*10000 + minor*100 + patch, earlier versions major*1000 + minor*100.
    major, rest = (v // 10000, v % 10000) if v >= 90000 else (v // 1000, v % 1000)
    return f"cudnnGetVersion {v} = {major}.{rest // 100}.{rest % 100}"
ask("NVRTC", "libnvrtc.so", nvrtc)
ask("NVRTC builtins", "libnvrtc-builtins.so", lambda lib: "loads")
ask("cuBLAS", "libcublas.so", cublas)
ask("cuBLASLt", "libcublasLt.so", cublaslt)
ask("cuDNN", "libcudnn.so", cudnn)
def nccl(lib):
    v = ctypes.c_int()
    rc = lib.ncclGetVersion(ctypes.byref(v))
    if rc != 0:
        return f"ncclGetVersion error {rc}"
    code = v.value
    return f"ncclGetVersion {code} = {code // 10000}.{code // 100 % 100}.{code % 100}"
ask("NCCL", "libnccl.so", nccl)
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    v = ctypes.c_int()
    rc = cuda.cuDriverGetVersion(ctypes.byref(v))
    print(f"libcuda: cuDriverGetVersion {v.value // 1000}.{v.value % 1000 // 10}" if rc == 0
          else f"libcuda: cuDriverGetVersion error {rc}")
except OSError as e:
    print(f"libcuda: not found ({e})")
PY
# PyTorch's side, in the environment the script was started with.
python3 - "$WORK/torchvision" <<'PY' || echo "torch: python3 failed"
import sys
try:
    import torch
    print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'none'}, "
          f"GPU usable: {torch.cuda.is_available()})")
except Exception as e:
    print(f"torch: not found ({type(e).__name__}: {e})")
try:
    import torchvision
    print(f"torchvision: {torchvision.__version__}")
    have = "1"
except Exception as e:
    print(f"torchvision: not found ({type(e).__name__}: {e})")
    have = "0"
open(sys.argv[1], "w").write(have)
PY
HAVE_TORCHVISION=$(cat "$WORK/torchvision" 2>/dev/null || echo 0)

if command -v cargo >/dev/null 2>&1; then
  "$SELF" build || { echo "gpu-check: the build failed, so nothing runs (no stale binaries)" >&2; exit 1; }
  need_glibc=$(cat "$OUT_DIR/GLIBC_REQUIRED" 2>/dev/null)
fi
for bin in "${BINS[@]}"; do
  [ -x "$OUT_DIR/$bin" ] || { echo "gpu-check: $OUT_DIR/$bin missing: run '$0 build' where cargo is" >&2; exit 1; }
done
if [ -z "$need_glibc" ]; then
  echo "gpu-check: $OUT_DIR/GLIBC_REQUIRED missing: these binaries come from an older build;" \
    "run '$0 build' again where cargo is" >&2
  exit 1
fi
if [ -z "$machine_glibc" ]; then
  echo "gpu-check: cannot tell this machine's glibc version (no ldd, no getconf), so cannot" \
    "tell whether the binaries (glibc $need_glibc or newer) run here" >&2
  exit 1
fi
if [ "$(printf '%s\n' "$need_glibc" "$machine_glibc" | sort -V | tail -1)" != "$machine_glibc" ]; then
  echo "gpu-check: the binaries in $OUT_DIR cannot run on this machine: they need glibc" \
    "$need_glibc or newer (symbol version GLIBC_$need_glibc) and this machine has glibc" \
    "$machine_glibc. Build them on a system with glibc $machine_glibc or older (or a container" \
    "of one) and carry them again." >&2
  exit 1
fi
ls -l "$LIBS"

RUN_BUDGET_S=${RUN_BUDGET_S:-330}
CHECK_BUDGET_S=${CHECK_BUDGET_S:-200}
FAMILY_S=${FAMILY_S:-60}
MIN_RUN_S=${MIN_RUN_S:-20}
MIN_CHECK_S=${MIN_CHECK_S:-10}
KILL_AFTER_S=5
DEADLINE=$((SECONDS + RUN_BUDGET_S))
CHECK_DEADLINE=$((SECONDS + (CHECK_BUDGET_S < RUN_BUDGET_S ? CHECK_BUDGET_S : RUN_BUDGET_S)))
ROWS="$WORK/rows.tsv"
BENCH_LOG="$WORK/bench.log"
: > "$ROWS"
: > "$BENCH_LOG"

now() { date +%s.%N; }

# record NAME RESULT SECONDS DETAIL: one row of the closing table.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$ROWS"
  echo "-- $1: $2${4:+ ($4)}, $3 s"
}

# why_of FILE: the line of a failed run's output that says why (a panic's message, else the first
# error line, else the first line that says something failed, else the last line), cut short.
why_of() {
  awk '
    found_panic == 1 { panic = $0; found_panic = 2 }
    /panicked at/ && !found_panic { found_panic = 1 }
    error == "" && (/^error/ || /^[A-Za-z.]*(Error|Exception)(:|$)/ || /^Error/) { error = $0 }
    failed == "" && /fail/ && !/^test result:/ && !/^failures:/ && !/^FAILED/ { failed = $0 }
    NF { last = $0 }
    END { print (panic != "" ? panic : error != "" ? error : failed != "" ? failed : last) }' "$1" \
    | tr '|\t' '/ ' | cut -c1-160
}

# The table of every row, and a line of counts.
report() {
  echo
  echo "| check | result | s | detail |"
  echo "|---|---|---:|---|"
  awk -F '\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$ROWS"
  awk -F '\t' '{ n[$2]++ } END {
    printf "gpu-check: %d rows: %d pass, %d fail, %d timeout, %d skipped\n",
      NR, n["pass"], n["fail"], n["timeout"], n["skipped"] }' "$ROWS"
}

trap 'echo "gpu-check: interrupted"; report; exit 130' INT TERM

# row KIND NAME CAP ENV CMD...: run CMD as one row. KIND: check (a correctness check: held to
# CHECK_DEADLINE; not running for want of time fails it) or bench (a benchmark: held to DEADLINE;
# no time left skips it). ENV: ours (dscl's libraries on LD_LIBRARY_PATH) or start (the
# environment the script was started with: PyTorch's). Sets ROW_RESULT (pass, fail, timeout,
# skipped) and ROW_CAP.
row() {
  local kind=$1 name=$2 cap=$3 env=$4
  shift 4
  local deadline=$DEADLINE min=$MIN_RUN_S
  if [ "$kind" = check ]; then deadline=$CHECK_DEADLINE; min=$MIN_CHECK_S; fi
  local left=$((deadline - SECONDS))
  [ "$left" -lt "$cap" ] && cap=$left
  ROW_CAP=$cap
  echo
  echo "== $name (timeout ${cap}s): $*"
  if [ "$cap" -lt "$min" ] || [ "$cap" -le 0 ]; then
    if [ "$kind" = check ]; then ROW_RESULT=fail; else ROW_RESULT=skipped; fi
    record "$name" "$ROW_RESULT" 0 "no time left: not run"
    return
  fi
  local cmd=("$@")
  [ "$env" = ours ] && cmd=(env LD_LIBRARY_PATH="$OUR_LD_LIBRARY_PATH" "$@")
  local start out="$WORK/row.out"
  start=$(now)
  timeout -k "$KILL_AFTER_S" "$cap" "${cmd[@]}" < /dev/null 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  local took
  took=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  [ "$kind" = bench ] && grep '^impl=' "$out" >> "$BENCH_LOG"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    ROW_RESULT=timeout
    local last
    last=$(awk 'NF { last = $0 } END { print last }' "$out" | tr '|\t' '/ ' | cut -c1-120)
    record "$name" timeout "$took" "cap ${cap} s${last:+; its last line: $last}"
  elif [ "$rc" != 0 ]; then
    ROW_RESULT=fail
    local why="exit $rc"
    [ "$rc" -gt 128 ] && why="$why, SIG$(kill -l $((rc - 128)) 2>/dev/null)"
    local said
    said=$(why_of "$out")
    record "$name" fail "$took" "$why${said:+: $said}"
  elif [ "$kind" = check ] && grep -q '^skipped:' "$out"; then
    # DSCL_REQUIRE_CUDA=1 makes a CUDA test fail rather than skip; one that still skips did not
    # check anything.
    ROW_RESULT=fail
    record "$name" fail "$took" "$(grep -m1 '^skipped:' "$out")"
  else
    ROW_RESULT=pass
    record "$name" pass "$took" ""
  fi
}

# bench ROW IMPL NAME CAP ENV CMD...: a benchmark whose result line lands in the table of speeds;
# a timeout, a skip or a failure becomes a line `impl=IMPL row=ROW status=...` shown in its place.
bench() {
  local table_row=$1 impl=$2
  shift 2
  row bench "$@"
  case $ROW_RESULT in
    timeout) echo "impl=$impl row=$table_row status=timeout limit_s=$ROW_CAP" >> "$BENCH_LOG" ;;
    skipped) echo "impl=$impl row=$table_row status=skipped" >> "$BENCH_LOG" ;;
    fail) echo "impl=$impl row=$table_row status=failed" >> "$BENCH_LOG" ;;
  esac
}

# skip_torchvision ROW NAME: a PyTorch benchmark that needs torchvision, on a machine without it.
skip_torchvision() {
  echo
  echo "== $2: skipped, torchvision does not import"
  record "$2" skipped 0 "no torchvision"
  echo "impl=torch row=$1 status=no-torchvision" >> "$BENCH_LOG"
}

# 1. The shipped float64 vectors.
row check "runtime verify" 60 ours "$OUT_DIR/runtime" verify --backend cuda \
  tests/data/dscl_vectors_small.json

# 2. The conformance suite, one process per family, as the binary lists them.
families=$(timeout 30 env LD_LIBRARY_PATH="$OUR_LD_LIBRARY_PATH" "$OUT_DIR/conformance_cuda" \
  --list --format terse < /dev/null | sed -n 's/: test$//p')
if [ -z "$families" ]; then
  row check "conformance --list" 30 ours "$OUT_DIR/conformance_cuda" --list --format terse
  [ "$ROW_RESULT" = pass ] && record "conformance families" fail 0 "the binary listed no tests"
fi
for family in $families; do
  row check "conformance $family" "$FAMILY_S" ours "$OUT_DIR/conformance_cuda" --exact "$family" \
    --nocapture --test-threads 1
done

# 3. End to end on the built-in digits (loader, both stages, evaluation, checkpoints): the first
# stage-1 losses on CUDA follow the CPU backend's for the same seed, as runtime/tests/wgpu_cli.rs
# checks for wgpu; at TF32 they only need to stay close. (This python only starts the runtime,
# so it runs with dscl's libraries.)
cat > "$WORK/digits.py" <<'PY'
import json, math, os, subprocess, sys, tempfile
mode, runtime, work = sys.argv[1:4]
reference = os.path.join(work, "digits-cpu.json")
quick = ["--epochs", "2", "--batch-size", "32", "--queue", "64", "--crops", "2",
         "--linear-epochs", "1", "--workers", "2"]
def run(*backend):
    out = tempfile.mkdtemp(prefix="dscl-digits-", dir=work)
    done = subprocess.run([runtime, "run", *backend, "--out", out, *quick],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"runtime run {' '.join(backend)} failed (exit {done.returncode}):\n"
                 f"{done.stdout}{done.stderr}")
    steps = [json.loads(l) for l in open(f"{out}/log.jsonl")]
    losses = [s["loss"] for s in steps if s.get("kind") == "step" and s.get("phase") == "stage1"]
    top1 = json.load(open(f"{out}/metrics.json"))["top1"]
    print(f"{' '.join(backend)}: {len(losses)} stage-1 steps, first losses "
          f"{[round(x, 5) for x in losses[:3]]}, top-1 {top1}")
    return losses, top1
if mode == "cpu":
    losses, _ = run("--backend", "cpu")
    json.dump(losses, open(reference, "w"))
    sys.exit(0)
tol = {"fp32": 1e-3, "tf32": 1e-2}[mode]
gpu, top1 = run("--backend", "cuda", "--precision", mode)
if not os.path.exists(reference):
    sys.exit("no CPU losses to compare with (the digits cpu row failed)")
cpu = json.load(open(reference))
ok = (len(gpu) == len(cpu) and math.isfinite(top1)
      and all(abs(g - c) <= tol * max(abs(c), 1.0) for g, c in zip(gpu[:3], cpu[:3])))
print(f"cuda {mode} against cpu, first 3 losses within {tol} relative: {'yes' if ok else 'NO'}")
sys.exit(0 if ok else 1)
PY
for mode in cpu fp32 tf32; do
  row check "digits $mode" 60 ours python3 "$WORK/digits.py" "$mode" "$OUT_DIR/runtime" "$WORK"
done

# 4-6. The benchmarks, dscl with its libraries, PyTorch in the environment it was started with.
STAGE1=(--arch resnet50 --batch 64 --image 224 --crop 64 --crops 5 --queue 65536 --classes 1000)
bench stage1 dscl "stage-1 dscl" 100 ours "$OUT_DIR/dscl_step" --backend cuda "${STAGE1[@]}" \
  --warmup 1 --steps 3
bench stage1 torch "stage-1 torch" 90 start python3 benches/compare/dscl_step_torch.py \
  --device cuda --precision fp32 "${STAGE1[@]}" --warmup 3 --steps 10
bench stage1-tf32 dscl "stage-1 tf32 dscl" 60 ours "$OUT_DIR/dscl_step" --backend cuda \
  --precision tf32 "${STAGE1[@]}" --warmup 1 --steps 3
bench stage1-tf32 torch "stage-1 tf32 torch" 60 start python3 benches/compare/dscl_step_torch.py \
  --device cuda --precision tf32 "${STAGE1[@]}" --warmup 3 --steps 10
bench loss dscl "loss dscl" 90 ours "$OUT_DIR/loss_timing" --backend cuda --reps 20 8192 65536
bench loss torch "loss torch" 90 start python3 benches/compare/loss_torch.py --device cuda \
  --ks 8192 65536 --variants official --reps 20
bench classifier dscl "classifier dscl" 60 ours "$OUT_DIR/train_step" --backend cuda \
  --arch resnet50 --batch 64 --image 224 --steps 5
if [ "$HAVE_TORCHVISION" = 1 ]; then
  bench classifier torch "classifier torch" 60 start python3 benches/compare/train_step_torch.py \
    --device cuda --arch resnet50 --batch 64 --image 224 --steps 5
else
  skip_torchvision classifier "classifier torch"
fi

python3 - "$BENCH_LOG" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("impl=")]
WHY = {"skipped": "skipped (no time left)", "no-torchvision": "skipped (no torchvision)",
       "failed": "failed"}
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
    return None, WHY.get(why["status"], why["status"])
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

report
awk -F '\t' '$2 == "fail" || $2 == "timeout" { bad = 1 } END { exit bad }' "$ROWS"
