#!/usr/bin/env python3
"""GEMM throughput of numpy (OpenBLAS) and torch.matmul (CPU) on the shapes of
benches/benches/gemm.rs, for comparison with the dscl CPU backend.

Run with the same thread count as the Rust bench, and without the OpenBLAS overrides some
environments set (they can pin a slower kernel):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 \
        python3 benches/compare/gemm_numpy.py --threads 2

Prints GFLOP/s (2*m*n*k / best time over the repeats) per library and shape, and which BLAS
kernel each library loaded (threadpoolctl, when installed).
"""
import argparse
import os
import time

SHAPES = [
    # (name, m, n, k, trans_a, trans_b) -- same as benches/benches/gemm.rs
    ("square_256", 256, 256, 256, False, False),
    ("square_512", 512, 512, 512, False, False),
    ("square_1024", 1024, 1024, 1024, False, False),
    ("loss_256x66048x128_nt", 256, 66048, 128, False, True),
    ("loss_256x66048x128_nn", 256, 66048, 128, False, False),
    ("loss_256x128x66048_nn", 256, 128, 66048, False, False),
    ("loss_66048x128x256_tn", 66048, 128, 256, True, False),
]


def bench(fn, flops, min_time=1.0, min_reps=5):
    fn()  # warm up
    best = float("inf")
    reps = 0
    start = time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return flops / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", default=None, help="comma-separated shape names")
    args = ap.parse_args()

    import numpy as np

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        threadpool_info = None
        threadpool_limits = None

    import torch

    torch.set_num_threads(args.threads)
    limiter = threadpool_limits(limits=args.threads) if threadpool_limits else None

    print(f"numpy {np.__version__}, torch {torch.__version__}, threads {args.threads}")
    print("OPENBLAS_CORETYPE =", os.environ.get("OPENBLAS_CORETYPE"),
          " OPENBLAS_L2_SIZE =", os.environ.get("OPENBLAS_L2_SIZE"))
    if threadpool_info:
        for lib in threadpool_info():
            print("  {user_api}/{internal_api}: {prefix} threads={num_threads} arch={arch}".format(
                arch=lib.get("architecture"), **lib))
    print(f"torch BLAS: {torch.backends.mkl.is_available() and 'MKL' or 'other'}, "
          f"mkldnn={torch.backends.mkldnn.is_available()}")

    only = set(args.only.split(",")) if args.only else None
    rng = np.random.default_rng(0)
    print(f"{'shape':28} {'numpy GFLOP/s':>14} {'torch GFLOP/s':>14}")
    for name, m, n, k, ta, tb in SHAPES:
        if only and name not in only:
            continue
        a = rng.uniform(-1, 1, size=(k, m) if ta else (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, size=(n, k) if tb else (k, n)).astype(np.float32)
        c = np.empty((m, n), dtype=np.float32)
        an = a.T if ta else a
        bn = b.T if tb else b
        flops = 2.0 * m * n * k
        g_np = bench(lambda: np.matmul(an, bn, out=c), flops)
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        at = at.t() if ta else at
        bt = bt.t() if tb else bt
        ct = torch.empty((m, n), dtype=torch.float32)
        g_t = bench(lambda: torch.matmul(at, bt, out=ct), flops)
        print(f"{name:28} {g_np:14.1f} {g_t:14.1f}", flush=True)
    del limiter


if __name__ == "__main__":
    main()
