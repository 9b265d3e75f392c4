#!/usr/bin/env python3
"""The loss step of benches/benches/loss.rs in PyTorch (float32, eager, autograd), for comparison.

One step = DSCL forward+backward (gradient through q both as anchors and as rows 0..B-1 of the
contrast set, tau 0.07, beta 8, full queue) + PBSD forward+backward over C = 5 crops (teacher
softmax detached, gradient to the students), B = 256, d = 128, 1000 long-tailed classes.

Two implementations of the same math:

* ``official``: written the way the official DSCL code (MoCo-style, ``DSCLLoss`` / ``PBSDLoss``)
  does it: ``features = cat(q, k, queue^T)``, logits ``q @ features^T / T`` with the row max
  subtracted, float masks for the positives and for self (``scatter`` on ``ones_like``),
  ``exp(logits) * logits_mask``, a B x N tensor of DSCL weights (beta / (|P| - 1), 1 on the
  augmented view), the weighted mean of ``log_prob`` over the positives; PBSD per crop with
  ``einsum`` for the own-key column and the queue, ``cat``, ``softmax`` (teacher, detached) and
  ``log_softmax`` (student). The queue is stored d x K as there. Two things of the official code
  that cost time without changing the math are left out in PyTorch's favour: the per-crop
  ``queue.clone()`` and the unused label mask that ``PBSDLoss`` builds for every crop.
* ``lean``: a tighter eager version (``logsumexp`` with self masked to -inf, boolean masks,
  positives summed without a B x N weight tensor, ``F.cross_entropy`` with soft targets for
  PBSD), to show how much of the gap is the official code's style.

Before timing, both are checked in float64 against tests/data/dscl_vectors_small.json (PyTorch
float64 values the Rust tests also use): losses and gradients to 1e-6. The bench inputs are the
same numbers the Rust bench draws (SplitMix64 + Box-Muller, reproduced with numpy), so the losses
printed here can be compared with ``loss_memory``'s.

Peak memory (``--memory``): per K in a fresh process, warm up on a tiny step, build the inputs,
read VmRSS, reset VmHWM (write "5" to /proc/self/clear_refs), run one step, read VmHWM; the
extra is VmHWM - VmRSS, exactly as benches/src/bin/loss_memory.rs measures the Rust side.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "..", "tests", "data", "dscl_vectors_small.json")

# The bench configuration (benches/src/loss.rs, StepConfig::paper).
BATCH, DIM, CROPS, CLASSES, IMBALANCE = 256, 128, 5, 1000, 256.0
TAU, BETA = 0.07, 8.0
SEED = 0x5EEDD5C1


# ---------------------------------------------------------------------------------------------
# The losses.


def dscl_official(q, k, queue_t, labels, queue_labels, T, beta, decoupled=True):
    """DSCL (or SupCon with decoupled=False), official-code style. queue_t is d x K."""
    B = q.shape[0]
    features = torch.cat((q, k, queue_t.T), dim=0)  # N x d; rows 0..B-1 are q (with grad)
    all_labels = torch.cat((labels, labels, queue_labels), dim=0).view(-1, 1)
    positives = torch.eq(all_labels[:B], all_labels.T).to(q.dtype)  # B x N

    sim = torch.div(torch.matmul(features[:B], features.T), T)
    row_max, _ = torch.max(sim, dim=1, keepdim=True)
    logits = sim - row_max.detach()

    anchor = torch.arange(B, device=q.device).view(-1, 1)
    not_self = torch.scatter(torch.ones_like(positives), 1, anchor, 0)
    positives = positives * not_self
    exp_logits = torch.exp(logits) * not_self
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + 1e-12)

    if decoupled:
        others = positives.sum(dim=1, keepdim=True) - 1.0
        weights = torch.ones_like(positives) / (others + 1e-12) * beta
        weights = weights.scatter(1, anchor + B, 1.0)
    else:
        weights = torch.ones_like(positives)
    mean_log_prob = (positives * log_prob * weights).sum(1) / (positives * weights).sum(1)
    return -mean_log_prob.mean()


def pbsd_official(teachers, students, k, queue_t, T):
    """PBSD, official-code style: teachers/students are C x B x d, queue_t is d x K."""
    total = None
    for t, s in zip(teachers, students):
        t_pos = torch.einsum("nc,nc->n", t, k).unsqueeze(-1)
        t_neg = torch.einsum("nc,ck->nk", t, queue_t)
        t_logits = torch.cat([t_pos, t_neg], dim=1)
        t_logits /= T
        target = F.softmax(t_logits, dim=1)

        s_pos = torch.einsum("nc,nc->n", s, k).unsqueeze(-1)
        s_neg = torch.einsum("nc,ck->nk", s, queue_t)
        s_logits = torch.cat([s_pos, s_neg], dim=1)
        s_logits /= T
        log_p = F.log_softmax(s_logits, dim=1)

        crop = -(target.detach() * log_p).sum(1)
        total = crop if total is None else total + crop
    return total.mean() / len(students)


def dscl_lean(q, k, queue, labels, queue_labels, T, beta, decoupled=True):
    """The same loss, leaner eager PyTorch. queue is K x d."""
    B = q.shape[0]
    features = torch.cat((q, k, queue), dim=0)
    sim = torch.matmul(q, features.T) * (1.0 / T)  # B x N
    anchor = torch.arange(B, device=q.device)
    is_self = torch.zeros_like(sim, dtype=torch.bool)
    is_self[anchor, anchor] = True
    lse = torch.logsumexp(sim.masked_fill(is_self, -math.inf), dim=1)  # B

    all_labels = torch.cat((labels, labels, queue_labels), dim=0)
    others = torch.eq(labels.view(-1, 1), all_labels.view(1, -1))
    others[anchor, anchor] = False  # self
    others[anchor, anchor + B] = False  # the augmented view, weighted apart
    n_others = others.sum(1).to(sim.dtype)
    sum_others = torch.where(others, sim, 0.0).sum(1)
    log_p_aug = sim[anchor, anchor + B] - lse
    mean_log_p_others = sum_others / n_others.clamp(min=1.0) - lse
    if decoupled:
        w_others = beta * (n_others > 0).to(sim.dtype)
        per_anchor = -(log_p_aug + w_others * mean_log_p_others) / (1.0 + w_others)
    else:
        per_anchor = -(log_p_aug + n_others * mean_log_p_others) / (1.0 + n_others)
    return per_anchor.mean()


def pbsd_lean(teachers, students, k, queue, T):
    """The same loss, leaner eager PyTorch. queue is K x d."""
    total = 0.0
    for t, s in zip(teachers, students):
        with torch.no_grad():
            t_logits = torch.cat([(t * k).sum(1, keepdim=True), t @ queue.T], dim=1) / T
            target = torch.softmax(t_logits, dim=1)
        s_logits = torch.cat([(s * k).sum(1, keepdim=True), s @ queue.T], dim=1) / T
        total = total + F.cross_entropy(s_logits, target)
    return total / len(students)


VARIANTS = {
    # name: (dscl, pbsd, the queue layout it takes: "dK" = d x K, "Kd" = K x d)
    "official": (dscl_official, pbsd_official, "dK"),
    "lean": (dscl_lean, pbsd_lean, "Kd"),
}


def queue_for(variant, queue_kd):
    return queue_kd.T.contiguous() if VARIANTS[variant][2] == "dK" else queue_kd


# ---------------------------------------------------------------------------------------------
# Checks against the PyTorch float64 vectors the Rust tests use.


def check_vectors(path, tol=1e-6):
    with open(path) as f:
        v = json.load(f)
    x = v["inputs"]
    f64 = torch.float64

    def t(name):
        return torch.tensor(x[name], dtype=f64)

    k, queue = t("k"), t("queue")
    labels = torch.tensor(x["labels"], dtype=torch.long)
    queue_labels = torch.tensor(x["queue_labels"], dtype=torch.long)
    teachers = t("teachers")
    T, beta = float(v["T"]), float(v["beta"])
    out = v["outputs"]
    worst = 0.0
    for variant, (dscl, pbsd, _) in VARIANTS.items():
        qu = queue_for(variant, queue)
        for decoupled, name in ((True, "dscl"), (False, "supcon")):
            q = t("q").requires_grad_(True)
            loss = dscl(q, k, qu, labels, queue_labels, T, beta, decoupled=decoupled)
            loss.backward()
            errs = [
                abs(loss.item() - out[f"{name}_loss"]),
                (q.grad - torch.tensor(out[f"grad_q_{name}"], dtype=f64)).abs().max().item(),
            ]
            worst = max(worst, *errs)
            assert max(errs) <= tol, f"{variant} {name}: errors {errs} beyond {tol}"
        s = t("students").requires_grad_(True)
        loss = pbsd(teachers, s, k, qu, T)
        loss.backward()
        errs = [
            abs(loss.item() - out["pbsd_loss"]),
            (s.grad - torch.tensor(out["grad_students_pbsd"], dtype=f64)).abs().max().item(),
        ]
        worst = max(worst, *errs)
        assert max(errs) <= tol, f"{variant} pbsd: errors {errs} beyond {tol}"
    print(
        f"check: both variants reproduce {os.path.relpath(path)} "
        f"(dscl/supcon/pbsd losses and gradients, float64) to {worst:.1e} <= {tol:.0e}"
    )


# ---------------------------------------------------------------------------------------------
# The bench inputs: the numbers benches/src/loss.rs draws (SplitMix64, Box-Muller), vectorised.

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


class Draws:
    """Counter-based view of the Rust SplitMix64 stream: call n returns mix(seed + n * gamma)."""

    def __init__(self, seed):
        self.seed = np.uint64(seed)
        self.calls = 0

    def u64(self, n):
        with np.errstate(over="ignore"):
            i = np.arange(self.calls + 1, self.calls + n + 1, dtype=np.uint64)
            z = self.seed + i * _GAMMA
            z = (z ^ (z >> np.uint64(30))) * _M1
            z = (z ^ (z >> np.uint64(27))) * _M2
            z = z ^ (z >> np.uint64(31))
        self.calls += n
        return z

    def uniform(self, n):
        return (self.u64(n) >> np.uint64(11)).astype(np.float64) * (1.0 / float(1 << 53))

    def unit_rows(self, rows, dim):
        u = self.uniform(2 * rows * dim).reshape(-1, 2)
        z = np.sqrt(-2.0 * np.log(1.0 - u[:, 0])) * np.cos(2.0 * math.pi * u[:, 1])
        z = z.reshape(rows, dim)
        norm = np.maximum(np.sqrt((z * z).sum(1, keepdims=True)), 1e-12)
        return (z / norm).astype(np.float32)

    def labels(self, count, classes, imbalance):
        last = max(classes, 2) - 1
        cdf = np.cumsum(np.power(imbalance, -np.arange(classes, dtype=np.float64) / last))
        u = self.uniform(count) * cdf[-1]
        return np.minimum(np.searchsorted(cdf, u, side="right"), classes - 1).astype(np.int64)


def bench_inputs(queue_len, batch=BATCH, dim=DIM, crops=CROPS, device="cpu"):
    r = Draws(SEED)
    q = r.unit_rows(batch, dim)
    k = r.unit_rows(batch, dim)
    queue = r.unit_rows(queue_len, dim)
    labels = r.labels(batch, CLASSES, IMBALANCE)
    queue_labels = r.labels(queue_len, CLASSES, IMBALANCE)
    teachers = r.unit_rows(crops * batch, dim).reshape(crops, batch, dim)
    students = r.unit_rows(crops * batch, dim).reshape(crops, batch, dim)
    def to(a):
        return torch.from_numpy(a).to(device)

    return dict(
        q=to(q).requires_grad_(True),
        k=to(k),
        queue=to(queue),
        labels=to(labels),
        queue_labels=to(queue_labels),
        teachers=to(teachers),
        students=to(students).requires_grad_(True),
    )


class Step:
    """One loss step on fixed inputs: zero the grads, both losses, one backward."""

    def __init__(self, variant, x):
        self.dscl, self.pbsd, _ = VARIANTS[variant]
        self.x = dict(x)
        self.x["queue"] = queue_for(variant, x["queue"])

    def run(self):
        x = self.x
        x["q"].grad = None
        x["students"].grad = None
        l_dscl = self.dscl(x["q"], x["k"], x["queue"], x["labels"], x["queue_labels"], TAU, BETA)
        l_pbsd = self.pbsd(x["teachers"], x["students"], x["k"], x["queue"], TAU)
        (l_dscl + l_pbsd).backward()
        return l_dscl.item(), l_pbsd.item()

    def run_part(self, part):
        x = self.x
        if part == "dscl":
            x["q"].grad = None
            loss = self.dscl(
                x["q"], x["k"], x["queue"], x["labels"], x["queue_labels"], TAU, BETA
            )
        else:
            x["students"].grad = None
            loss = self.pbsd(x["teachers"], x["students"], x["k"], x["queue"], TAU)
        loss.backward()
        return loss.item()


# ---------------------------------------------------------------------------------------------
# Memory.


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(queue_len, variant):
    Step(variant, bench_inputs(256)).run()  # thread pool and allocator warm, on a tiny step
    step = Step(variant, bench_inputs(queue_len))
    import gc

    gc.collect()
    rss_inputs = before = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step.run()
    first = status_bytes("VmHWM") - before
    before = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    step.run()
    second = status_bytes("VmHWM") - before
    mib = 1024.0 * 1024.0
    print(
        f"K={queue_len} variant={variant} threads={torch.get_num_threads()} "
        f"peak_extra_mib={first / mib:.1f} steady_extra_mib={second / mib:.1f} "
        f"rss_inputs_mib={rss_inputs / mib:.1f}",
        flush=True,
    )


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[8192, 65536])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--variants", nargs="+", default=["official", "lean"], choices=VARIANTS)
    ap.add_argument("--reps", type=int, default=10, help="timed steps per K (after 2 warm-up)")
    ap.add_argument("--memory", action="store_true", help="also measure peak extra memory")
    ap.add_argument("--parts", action="store_true", help="also time DSCL and PBSD apart")
    ap.add_argument("--no-time", action="store_true", help="skip the step timing")
    ap.add_argument("--vectors", default=VECTORS)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (float32, TF32 off)")
    ap.add_argument("--memory-child", nargs=2, metavar=("K", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.memory_child[1])
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32 eager")
    check_vectors(args.vectors)

    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    for queue_len in args.ks:
        x = bench_inputs(queue_len, device=args.device)
        for variant in args.variants:
            step = Step(variant, x)
            if not args.no_time:
                for _ in range(2):
                    step.run()
                times = []
                for _ in range(args.reps):
                    start = time.perf_counter()
                    losses = step.run()
                    times.append((time.perf_counter() - start) * 1e3)
                print(
                    f"impl=torch device={args.device} K={queue_len} variant={variant} "
                    f"ms_per_step={np.mean(times):.2f} "
                    f"min_ms={np.min(times):.2f} median_ms={np.median(times):.2f} "
                    f"reps={args.reps} dscl_loss={losses[0]:.6f} pbsd_loss={losses[1]:.6f}",
                    flush=True,
                )
            if args.parts:
                for part in ("dscl", "pbsd"):
                    step.run_part(part)
                    start = time.perf_counter()
                    for _ in range(max(args.reps // 2, 1)):
                        step.run_part(part)
                    ms = (time.perf_counter() - start) * 1e3 / max(args.reps // 2, 1)
                    print(f"K={queue_len} variant={variant} part={part} ms_per_step={ms:.2f}")
            del step
        del x

    if args.memory:
        for queue_len in args.ks:
            for variant in args.variants:
                subprocess.run(
                    [
                        sys.executable,
                        os.path.abspath(__file__),
                        "--threads",
                        str(args.threads),
                        "--memory-child",
                        str(queue_len),
                        variant,
                    ],
                    check=True,
                )


if __name__ == "__main__":
    main()
