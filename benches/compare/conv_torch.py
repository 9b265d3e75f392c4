#!/usr/bin/env python3
"""Per-layer timings of the convolution (and batch-norm, ReLU, max-pool, add) training kernels in
PyTorch float32 eager on the CPU, for comparison with benches/src/bin/conv_timing.rs.

The shapes are every distinct convolution of
  r18: ResNet-18 with a CIFAR stem (3x3 stride-1 stem, no max-pool), 32x32 images, batch 128;
  r50: torchvision ResNet-50 (v1.5: stride on the 3x3 conv), 224x224 images, batch 16;
with `uses` = how many times the network runs that shape (the first conv's backward-data is not
needed in training, so comparisons give it weight 0).

Per shape: forward (F.conv2d), backward-data (torch.nn.grad.conv2d_input) and backward-filter
(torch.nn.grad.conv2d_weight; both dispatch to aten.convolution_backward, as autograd does), each
warmed up, then the median of --reps runs, in milliseconds. Output lines (parsed by
run_conv_comparison.sh) look like

  conv  r18 l1.3x3     128   64  32  32   64 3 1 1  4    fwd bwd_data bwd_filter
  op    r18 bn.64x32   fwd+bwd  ms

  python3 benches/compare/conv_torch.py [--threads 2] [--reps 5] [--filter SUBSTR] [--min]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# net, name, N, C, H, W, O, k, stride, pad, uses
SHAPES = [
    ("r18", "stem.3x3", 128, 3, 32, 32, 64, 3, 1, 1, 1),
    ("r18", "l1.3x3", 128, 64, 32, 32, 64, 3, 1, 1, 4),
    ("r18", "l2.3x3s2", 128, 64, 32, 32, 128, 3, 2, 1, 1),
    ("r18", "l2.ds1x1s2", 128, 64, 32, 32, 128, 1, 2, 0, 1),
    ("r18", "l2.3x3", 128, 128, 16, 16, 128, 3, 1, 1, 3),
    ("r18", "l3.3x3s2", 128, 128, 16, 16, 256, 3, 2, 1, 1),
    ("r18", "l3.ds1x1s2", 128, 128, 16, 16, 256, 1, 2, 0, 1),
    ("r18", "l3.3x3", 128, 256, 8, 8, 256, 3, 1, 1, 3),
    ("r18", "l4.3x3s2", 128, 256, 8, 8, 512, 3, 2, 1, 1),
    ("r18", "l4.ds1x1s2", 128, 256, 8, 8, 512, 1, 2, 0, 1),
    ("r18", "l4.3x3", 128, 512, 4, 4, 512, 3, 1, 1, 3),
    ("r50", "stem.7x7s2", 16, 3, 224, 224, 64, 7, 2, 3, 1),
    ("r50", "l1.1x1.64-64", 16, 64, 56, 56, 64, 1, 1, 0, 1),
    ("r50", "l1.3x3", 16, 64, 56, 56, 64, 3, 1, 1, 3),
    ("r50", "l1.1x1.64-256", 16, 64, 56, 56, 256, 1, 1, 0, 4),
    ("r50", "l1.1x1.256-64", 16, 256, 56, 56, 64, 1, 1, 0, 2),
    ("r50", "l2.1x1.256-128", 16, 256, 56, 56, 128, 1, 1, 0, 1),
    ("r50", "l2.3x3s2", 16, 128, 56, 56, 128, 3, 2, 1, 1),
    ("r50", "l2.ds1x1s2", 16, 256, 56, 56, 512, 1, 2, 0, 1),
    ("r50", "l2.1x1.128-512", 16, 128, 28, 28, 512, 1, 1, 0, 4),
    ("r50", "l2.1x1.512-128", 16, 512, 28, 28, 128, 1, 1, 0, 3),
    ("r50", "l2.3x3", 16, 128, 28, 28, 128, 3, 1, 1, 3),
    ("r50", "l3.1x1.512-256", 16, 512, 28, 28, 256, 1, 1, 0, 1),
    ("r50", "l3.3x3s2", 16, 256, 28, 28, 256, 3, 2, 1, 1),
    ("r50", "l3.ds1x1s2", 16, 512, 28, 28, 1024, 1, 2, 0, 1),
    ("r50", "l3.1x1.256-1024", 16, 256, 14, 14, 1024, 1, 1, 0, 6),
    ("r50", "l3.1x1.1024-256", 16, 1024, 14, 14, 256, 1, 1, 0, 5),
    ("r50", "l3.3x3", 16, 256, 14, 14, 256, 3, 1, 1, 5),
    ("r50", "l4.1x1.1024-512", 16, 1024, 14, 14, 512, 1, 1, 0, 1),
    ("r50", "l4.3x3s2", 16, 512, 14, 14, 512, 3, 2, 1, 1),
    ("r50", "l4.ds1x1s2", 16, 1024, 14, 14, 2048, 1, 2, 0, 1),
    ("r50", "l4.1x1.512-2048", 16, 512, 7, 7, 2048, 1, 1, 0, 3),
    ("r50", "l4.1x1.2048-512", 16, 2048, 7, 7, 512, 1, 1, 0, 2),
    ("r50", "l4.3x3", 16, 512, 7, 7, 512, 3, 1, 1, 2),
]

# Other training kernels: (net, name, kind, N, C, H, W).
OPS = [
    ("r18", "bn.64x32", "bn", 128, 64, 32, 32),
    ("r50", "bn.64x112", "bn", 16, 64, 112, 112),
    ("r50", "bn.256x56", "bn", 16, 256, 56, 56),
    ("r18", "relu.64x32", "relu", 128, 64, 32, 32),
    ("r50", "relu.256x56", "relu", 16, 256, 56, 56),
    ("r18", "add.64x32", "add", 128, 64, 32, 32),
    ("r50", "add.256x56", "add", 16, 256, 56, 56),
    ("r50", "maxpool.64x112", "maxpool", 16, 64, 112, 112),
]


USE_MIN = False


def median_ms(f, reps, warmup=2):
    for _ in range(warmup):
        f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t) * 1e3)
    return min(ts) if USE_MIN else statistics.median(ts)


def conv_row(shape, reps):
    net, name, n, c, h, w, o, k, s, p, uses = shape
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, h, w, generator=g)
    wt = torch.randn(o, c, k, k, generator=g) * (2.0 / (c * k * k)) ** 0.5
    y = F.conv2d(x, wt, stride=s, padding=p)
    gy = torch.randn(y.shape, generator=g)
    with torch.no_grad():
        fwd = median_ms(lambda: F.conv2d(x, wt, stride=s, padding=p), reps)
        bd = median_ms(
            lambda: torch.nn.grad.conv2d_input(x.shape, wt, gy, stride=s, padding=p), reps
        )
        bf = median_ms(
            lambda: torch.nn.grad.conv2d_weight(x, wt.shape, gy, stride=s, padding=p), reps
        )
    return fwd, bd, bf


def op_row(op, reps):
    net, name, kind, n, c, h, w = op
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, c, h, w, generator=g)
    if kind == "bn":
        gamma = torch.rand(c, generator=g) + 0.5
        beta = torch.randn(c, generator=g)
        rm, rv = torch.zeros(c), torch.ones(c)
        xg = x.clone().requires_grad_(True)
        gg, bg = gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)
        dy = torch.randn(x.shape, generator=g)

        def fwd():
            return F.batch_norm(xg, rm, rv, gg, bg, training=True, momentum=0.1, eps=1e-5)

        def step():
            y = fwd()
            torch.autograd.grad(y, (xg, gg, bg), dy)

        with torch.no_grad():
            f = median_ms(lambda: F.batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5), reps)
        return [("fwd", f), ("fwd+bwd", median_ms(step, reps))]
    if kind == "relu":
        y = torch.relu(x)
        dy = torch.randn(x.shape, generator=g)
        f = median_ms(lambda: torch.relu(x), reps)
        b = median_ms(lambda: torch.ops.aten.threshold_backward(dy, y, 0.0), reps)
        return [("fwd", f), ("bwd", b)]
    if kind == "add":
        z = torch.randn(x.shape, generator=g)
        return [("fwd", median_ms(lambda: x + z, reps))]
    if kind == "maxpool":
        y, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
        dy = torch.randn(y.shape, generator=g)
        f = median_ms(lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True), reps)
        b = median_ms(
            lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                dy, x, [3, 3], [2, 2], [1, 1], [1, 1], False, idx
            ),
            reps,
        )
        return [("fwd", f), ("bwd", b)]
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--filter", default="")
    ap.add_argument("--no-ops", action="store_true")
    ap.add_argument("--min", action="store_true", help="fastest run instead of the median")
    a = ap.parse_args()
    global USE_MIN
    USE_MIN = a.min
    torch.set_num_threads(a.threads)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, reps {a.reps} (median ms)")
    print(f"#     {'net':4} {'name':18} {'N':>4} {'C':>5} {'H':>4} {'W':>4} {'O':>5} k s p "
          f"{'uses':>4} {'fwd':>9} {'bwd_data':>9} {'bwd_filt':>9}")
    for sh in SHAPES:
        key = f"{sh[0]} {sh[1]}"
        if a.filter not in key:
            continue
        fwd, bd, bf = conv_row(sh, a.reps)
        net, name, n, c, h, w, o, k, s, p, uses = sh
        print(f"conv  {net:4} {name:18} {n:4} {c:5} {h:4} {w:4} {o:5} {k} {s} {p} {uses:4} "
              f"{fwd:9.3f} {bd:9.3f} {bf:9.3f}", flush=True)
    if a.no_ops:
        return
    for op in OPS:
        key = f"{op[0]} {op[1]}"
        if a.filter not in key:
            continue
        for part, ms in op_row(op, a.reps):
            print(f"op    {op[0]:4} {op[1]:18} {part:8} {ms:9.3f}", flush=True)


if __name__ == "__main__":
    main()
