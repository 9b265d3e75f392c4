#!/usr/bin/env python3
"""Kernel test vectors: PyTorch (and torchvision) float64 results for the reference backend.

Regenerate (from the repository root; needs torch, and torchvision for roi_align):

    pip install torch torchvision     # CPU builds are enough
    python3 tests/pytorch/make_kernel_vectors.py

This rewrites tests/data/kernel_vectors.json, which tests/tests/reference_vs_pytorch.rs
compiles in with include_str! and checks `ReferenceBackend<f64>` against, to 1e-10 relative.

Every case uses fixed seeds and small shapes, so the file is reproducible and stays small.
Gradients are taken with autograd from the PyTorch operator itself (never from a formula
written here), except for the supervised contrastive loss, which PyTorch does not ship: its
forward is written out below from the trait's definition and its gradient comes from autograd.
"""

import json
import os

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "kernel_vectors.json")


def flat(t):
    """A tensor as a flat list of Python floats (repr round-trips exactly)."""
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def flat_int(t):
    return [int(v) for v in t.detach().reshape(-1).tolist()]


def randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


# ---- convolution -------------------------------------------------------------------------------


def conv2d_case(name, seed, batch, cin, hw, cout, kernel, stride, padding):
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, cin, hw, hw).requires_grad_()
    w = (randn(gen, cout, cin, kernel, kernel) / (cin * kernel * kernel) ** 0.5).requires_grad_()
    y = F.conv2d(x, w, stride=stride, padding=padding)
    gy = randn(gen, *y.shape)
    (y * gy).sum().backward()
    return {
        "name": name,
        "batch": batch,
        "in_channels": cin,
        "in_height": hw,
        "in_width": hw,
        "out_channels": cout,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "input": flat(x),
        "weight": flat(w),
        "grad_output": flat(gy),
        "output": flat(y),
        "grad_input": flat(x.grad),
        "grad_weight": flat(w.grad),
    }


# ---- batch normalisation -----------------------------------------------------------------------


def batch_norm_case(name, seed, batch, channels, spatial):
    gen = torch.Generator().manual_seed(seed)
    eps, momentum = 1e-5, 0.1
    x = (randn(gen, batch, channels, spatial, scale=2.0) + 0.5).requires_grad_()
    gamma = (1.0 + 0.3 * randn(gen, channels)).requires_grad_()
    beta = (0.2 * randn(gen, channels)).requires_grad_()
    running_mean_in = 0.1 * randn(gen, channels)
    running_var_in = 1.0 + 0.5 * torch.rand(channels, generator=gen)
    running_mean, running_var = running_mean_in.clone(), running_var_in.clone()
    y = F.batch_norm(x, running_mean, running_var, gamma, beta, training=True, momentum=momentum, eps=eps)
    # The saved statistics, as the native kernel returns them for its backward.
    _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        x.detach(), gamma.detach(), beta.detach(), None, None, True, momentum, eps
    )
    gy = randn(gen, *y.shape)
    (y * gy).sum().backward()
    # Inference mode with the statistics just updated.
    y_inference = F.batch_norm(
        x.detach(), running_mean, running_var, gamma.detach(), beta.detach(), training=False, eps=eps
    )
    return {
        "name": name,
        "batch": batch,
        "channels": channels,
        "spatial": spatial,
        "eps": eps,
        "momentum": momentum,
        "x": flat(x),
        "gamma": flat(gamma),
        "beta": flat(beta),
        "running_mean_in": flat(running_mean_in),
        "running_var_in": flat(running_var_in),
        "grad_y": flat(gy),
        "y": flat(y),
        "save_mean": flat(save_mean),
        "save_invstd": flat(save_invstd),
        "running_mean": flat(running_mean),
        "running_var": flat(running_var),
        "grad_x": flat(x.grad),
        "grad_gamma": flat(gamma.grad),
        "grad_beta": flat(beta.grad),
        "y_inference": flat(y_inference),
    }


# ---- pooling -----------------------------------------------------------------------------------


def max_pool_case(name, seed, batch, channels, hw, kernel, stride, padding, quantised):
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, channels, hw, hw)
    if quantised:
        # Few distinct values, so windows hold ties and the tie rule is exercised.
        x = torch.round(x * 1.5)
    x.requires_grad_()
    y, argmax = F.max_pool2d(x, kernel, stride=stride, padding=padding, return_indices=True)
    gy = randn(gen, *y.shape)
    (y * gy).sum().backward()
    return {
        "name": name,
        "batch": batch,
        "channels": channels,
        "in_height": hw,
        "in_width": hw,
        "kernel": kernel,
        "stride": stride,
        "padding": padding,
        "x": flat(x),
        "grad_y": flat(gy),
        "y": flat(y),
        "argmax": flat_int(argmax),
        "grad_x": flat(x.grad),
    }


def global_avg_pool_case(name, seed, batch, channels, h, w):
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, batch, channels, h, w).requires_grad_()
    y = F.adaptive_avg_pool2d(x, 1)
    gy = randn(gen, *y.shape)
    (y * gy).sum().backward()
    return {
        "name": name,
        "batch": batch,
        "channels": channels,
        "spatial": h * w,
        "x": flat(x),
        "grad_y": flat(gy),
        "y": flat(y),
        "grad_x": flat(x.grad),
    }


# ---- roi align ---------------------------------------------------------------------------------


def roi_align_case(name, seed, batch, channels, hw, boxes, spatial_scale, pooled, sampling_ratio, aligned):
    from torchvision.ops import roi_align

    gen = torch.Generator().manual_seed(seed)
    features = randn(gen, batch, channels, hw, hw).requires_grad_()
    rois = torch.tensor(boxes, dtype=torch.float64)
    out = roi_align(features, rois, (pooled, pooled), spatial_scale, sampling_ratio, aligned)
    gy = randn(gen, *out.shape)
    (out * gy).sum().backward()
    return {
        "name": name,
        "batch": batch,
        "channels": channels,
        "height": hw,
        "width": hw,
        "num_rois": len(boxes),
        "pooled": pooled,
        "spatial_scale": spatial_scale,
        "sampling_ratio": sampling_ratio,
        "aligned": aligned,
        "features": flat(features),
        "boxes": flat(rois),
        "grad_output": flat(gy),
        "output": flat(out),
        "grad_features": flat(features.grad),
    }


# ---- rows --------------------------------------------------------------------------------------


def l2_normalize_case(name, seed, rows, cols):
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, rows, cols, scale=3.0).requires_grad_()
    y = F.normalize(x, dim=1)
    gy = randn(gen, rows, cols)
    (y * gy).sum().backward()
    return {
        "name": name,
        "rows": rows,
        "cols": cols,
        "x": flat(x),
        "grad_y": flat(gy),
        "y": flat(y),
        "norms": flat(x.detach().norm(dim=1)),
        "grad_x": flat(x.grad),
    }


def padded(t, cols):
    """Rows of `t` stored with `cols` columns; the extra (masked) columns hold junk."""
    rows, valid = t.shape
    out = torch.full((rows, cols), 1e3)
    out[:, :valid] = t.detach()
    return out


def masked(t, valid_cols):
    """`t` with its masked columns set to 0, as the kernels write them."""
    return t.masked_fill(torch.arange(t.shape[1]) >= valid_cols, 0.0)


def softmax_case(name, seed, rows, cols, valid_cols, scale):
    gen = torch.Generator().manual_seed(seed)
    x = randn(gen, rows, valid_cols, scale=scale)
    return {
        "name": name,
        "rows": rows,
        "cols": cols,
        "valid_cols": valid_cols,
        "x": flat(padded(x, cols)),
        "softmax": flat(masked(padded(torch.softmax(x, dim=1), cols), valid_cols)),
        "logsumexp": flat(torch.logsumexp(x, dim=1)),
    }


def hard_cross_entropy_case(name, seed, rows, cols, valid_cols):
    gen = torch.Generator().manual_seed(seed)
    logits = randn(gen, rows, valid_cols, scale=2.0).requires_grad_()
    labels = torch.randint(0, valid_cols, (rows,), generator=gen)
    loss = F.cross_entropy(logits, labels, reduction="none")
    loss.mean().backward()
    grad = masked(padded(logits.grad, cols), valid_cols)
    return {
        "name": name,
        "rows": rows,
        "cols": cols,
        "valid_cols": valid_cols,
        "grad_scale": 1.0 / rows,
        "logits": flat(padded(logits, cols)),
        "labels": flat_int(labels),
        "loss": flat(loss),
        "grad": flat(grad),
    }


def soft_cross_entropy_case(name, seed, rows, cols, valid_cols):
    gen = torch.Generator().manual_seed(seed)
    logits = randn(gen, rows, valid_cols, scale=2.0).requires_grad_()
    targets = torch.softmax(randn(gen, rows, valid_cols, scale=3.0), dim=1)
    # One row whose targets do not sum to 1, so the `q * sum(t)` term of the gradient matters.
    targets[-1] *= 0.7
    loss = F.cross_entropy(logits, targets, reduction="none")
    loss.mean().backward()
    grad = masked(padded(logits.grad, cols), valid_cols)
    return {
        "name": name,
        "rows": rows,
        "cols": cols,
        "valid_cols": valid_cols,
        "grad_scale": 1.0 / rows,
        "logits": flat(padded(logits, cols)),
        "targets": flat(padded(targets, cols)),
        "loss": flat(loss),
        "grad": flat(grad),
    }


def contrastive_case(name, seed, batch, queue, masked, rows, row_offset, num_classes, beta):
    """SupCon (beta None) or DSCL on logits s (anchor rows x contrast columns), written out from
    the trait's definition; the gradient is autograd's, of `sum_i loss_i / batch`."""
    gen = torch.Generator().manual_seed(seed)
    cols = 2 * batch + queue + masked
    valid = 2 * batch + queue
    y = torch.randint(0, num_classes, (batch,), generator=gen)
    y_queue = torch.randint(0, num_classes, (queue,), generator=gen)
    labels = torch.cat([y, y, y_queue, torch.full((masked,), num_classes + 5)])
    s = randn(gen, rows, cols, scale=3.0).requires_grad_()
    losses = []
    for r in range(rows):
        i = row_offset + r
        others = [j for j in range(valid) if j != i]
        lse = torch.logsumexp(s[r, others], dim=0)
        positives = [j for j in others if labels[j] == labels[i]]
        view = batch + i
        if beta is None:
            weights = {j: 1.0 for j in positives}
        else:
            rest = [j for j in positives if j != view]
            weights = {view: 1.0}
            weights.update({j: beta / len(rest) for j in rest})
        total = sum(weights.values())
        losses.append(-sum(w * (s[r, j] - lse) for j, w in weights.items()) / total)
    losses = torch.stack(losses)
    (losses.sum() / batch).backward()
    return {
        "name": name,
        "rows": rows,
        "row_offset": row_offset,
        "batch": batch,
        "cols": cols,
        "valid_cols": valid,
        "num_classes": num_classes,
        "beta": beta,
        "grad_scale": 1.0 / batch,
        "logits": flat(s),
        "labels": flat_int(labels),
        "loss": flat(losses),
        "grad": flat(s.grad),
    }


# ---- optimisation ------------------------------------------------------------------------------


def sgd_case(name, seed, lr, momentum, weight_decay, dampening, nesterov, steps=3, size=7):
    gen = torch.Generator().manual_seed(seed)
    p = torch.nn.Parameter(randn(gen, size))
    initial = flat(p)
    opt = torch.optim.SGD(
        [p], lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening, nesterov=nesterov
    )
    grads, weights, velocities = [], [], []
    for _ in range(steps):
        g = randn(gen, size)
        p.grad = g.clone()
        opt.step()
        grads.append(flat(g))
        weights.append(flat(p))
        buf = opt.state[p].get("momentum_buffer")
        velocities.append(flat(buf) if buf is not None else None)
    return {
        "name": name,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "dampening": dampening,
        "nesterov": nesterov,
        "initial": initial,
        "grads": grads,
        "weights": weights,
        "velocities": velocities,
    }


def main():
    vectors = {
        "generator": "tests/pytorch/make_kernel_vectors.py",
        "torch": torch.__version__,
        "conv2d": [
            conv2d_case("3x3 stride 2 pad 1", 1, 2, 3, 9, 4, 3, 2, 1),
            conv2d_case("1x1 stride 1", 2, 2, 5, 4, 3, 1, 1, 0),
            conv2d_case("1x1 stride 2 (downsample)", 3, 2, 4, 6, 3, 1, 2, 0),
            conv2d_case("7x7 stride 2 pad 3 (stem)", 4, 1, 2, 12, 4, 7, 2, 3),
        ],
        "batch_norm": [
            batch_norm_case("conv-like [4, 3, 6]", 10, 4, 3, 6),
            batch_norm_case("linear-like [5, 4, 1]", 11, 5, 4, 1),
        ],
        "max_pool2d": [
            max_pool_case("3x3 stride 2 pad 1", 20, 2, 2, 9, 3, 2, 1, False),
            max_pool_case("3x3 stride 2 pad 1, ties", 21, 1, 3, 8, 3, 2, 1, True),
        ],
        "global_avg_pool": [global_avg_pool_case("[2, 3, 4, 5]", 30, 2, 3, 4, 5)],
        "roi_align": [],
        "l2_normalize": [l2_normalize_case("[5, 8]", 40, 5, 8)],
        "softmax": [
            softmax_case("[4, 7] valid 5", 50, 4, 7, 5, 2.0),
            softmax_case("large logits", 51, 3, 6, 6, 60.0),
        ],
        "hard_cross_entropy": [hard_cross_entropy_case("[6, 7] valid 5", 60, 6, 7, 5)],
        "soft_cross_entropy": [soft_cross_entropy_case("[4, 6] valid 5", 61, 4, 6, 5)],
        "contrastive": [
            contrastive_case("SupCon", 70, 4, 5, 2, 4, 0, 3, None),
            contrastive_case("DSCL beta 8, block 1..3", 71, 4, 5, 2, 2, 1, 3, 8.0),
            contrastive_case("DSCL beta 0.5, many classes", 72, 3, 4, 1, 3, 0, 6, 0.5),
        ],
        "sgd": [
            sgd_case("momentum 0.9 wd 5e-4", 80, 0.1, 0.9, 5e-4, 0.0, False),
            sgd_case("nesterov", 81, 0.05, 0.9, 5e-4, 0.0, True),
            sgd_case("dampening 0.1", 82, 0.1, 0.9, 5e-4, 0.1, False),
            sgd_case("no momentum, dampening ignored", 83, 0.1, 0.0, 1e-3, 0.5, False),
        ],
    }
    # Boxes are (batch index, x1, y1, x2, y2) in input pixels; several reach past the map.
    stride4_boxes = [
        [0, 5.3, 7.1, 40.2, 50.9],
        [1, -10.0, -5.5, 20.0, 30.25],  # starts left of and above the map
        [0, 40.0, 44.0, 90.0, 100.0],  # ends past the 64 px image
        [1, 30.0, 30.0, 31.0, 32.5],  # smaller than a cell: forced to 1x1 when not aligned
        [0, 70.0, 70.0, 120.0, 130.0],  # entirely beyond the map
        [1, 0.0, 0.0, 64.0, 64.0],
    ]
    stride32_boxes = [
        [0, 10.0, 20.0, 150.0, 200.0],
        [1, -30.0, 100.0, 120.0, 260.0],
        [0, 180.0, 181.5, 300.0, 300.0],
        [1, 0.0, 0.0, 224.0, 224.0],
        [0, 100.0, 100.0, 120.0, 110.0],
    ]
    vectors["roi_align"] = [
        roi_align_case("scale 1/4, 2x2, adaptive", 90, 2, 2, 16, stride4_boxes, 0.25, 2, 0, False),
        roi_align_case("scale 1/32, 2x2, adaptive", 91, 2, 3, 7, stride32_boxes, 1 / 32, 2, 0, False),
        roi_align_case("scale 1/4, aligned", 92, 2, 1, 16, stride4_boxes, 0.25, 2, 0, True),
        roi_align_case("scale 1/4, sampling 2, 3x3", 93, 2, 1, 16, stride4_boxes, 0.25, 3, 2, False),
    ]
    text = json.dumps(vectors, separators=(",", ":"))
    with open(OUT, "w") as f:
        f.write(text)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)} ({len(text) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
