#!/usr/bin/env python3
"""One stage-1 step of DSCL + PBSD in PyTorch eager: the reference for `dscl_step`
(benches/src/bin/dscl_step.rs), written the way the official DSCL code (a MoCo model) does it.

The step, at the paper's ImageNet-LT shapes by default (ResNet-50, 224 px, batch 64, C = 5 crops
of 64 px, K = 65536, d = 128, tau 0.07, beta 8, lambda 1.5):

* the query encoder (ResNet backbone + head Linear(c, c) -> ReLU -> Linear(c, 128)) on the
  query images, embeddings L2-normalised;
* teachers, without gradient: the query's last feature map ROI-aligned 2x2 on each crop's box
  (spatial scale 1 / backbone stride, adaptive sampling, aligned=False), averaged, through the
  same head, normalised;
* students: the crops through the query encoder;
* the key encoder (a copy of the query encoder, never given gradients) moves first,
  key <- 0.999 key + 0.001 query, then encodes the key images, without gradient;
* DSCL over [queries; keys; queue] (self excluded) + 1.5 x PBSD (soft cross-entropy of the
  students against the teachers' softmax over [own key; queue]); both losses are
  `dscl_official` and `pbsd_official` from loss_torch.py (checked there against the PyTorch
  float64 vectors the Rust tests use);
* backward, SGD (momentum 0.9, weight decay 5e-4, lr 0.1 x batch / 256), then the keys and
  labels enter the FIFO queue.

It matches the Rust step's math, network and initialisation (torchvision's ResNet layout and
init with zero_init_residual; `params=` must equal dscl_step's). The network is defined here,
not taken from torchvision, so the script also runs without torchvision and offers the same
small networks as the Rust side; ROI-align is torchvision.ops.roi_align when torchvision
imports, else `roi_align_torch` below (the same math; `--check-roi-align` compares the two in
float64, forward and backward; `--roi-align torch` forces it; `roi_align=` says which ran).

Where the official code differs, and what is done here:
* it puts all C crops through the encoder one crop at a time (batch-norm statistics per crop);
  the default `--crop-passes per-crop` is that loop, as the Rust step's default
  (`CropNorm::PerSet`, statistics per crop set); `--crop-passes batched` is one batch of C x B
  (statistics over all crops), the Rust step's `CropNorm::Joint`.
* it builds the teachers with gradient tracking and detaches their softmax; here they are
  built under no_grad (the same values; no graph kept that backward would never use).
* its queue starts as random unit keys with random labels and is always taken as full; the
  Rust bench fills its queue the same way, so both contrast against K keys from the first step.

Timing: --warmup un-timed steps, then the median and minimum of --steps steps; each step ends
with the loss read back and, on CUDA, a synchronise, before the timer is read. images_per_s
counts the batch's query images. --precision: fp32 (TF32 off for matmul and cuDNN: the Rust
step's arithmetic), tf32 (both on), bf16 (the encoder passes under bf16 autocast; the losses,
over K + 1 logits at tau 0.07, stay fp32).

    python3 benches/compare/dscl_step_torch.py --device cuda           # the paper's shapes
    python3 benches/compare/dscl_step_torch.py --arch resnet18-cifar --batch 8 --image 32 \\
        --crop 16 --queue 256 --threads 2
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loss_torch import dscl_official, pbsd_official  # noqa: E402
from proc_status import rss_kib  # noqa: E402

TAU, BETA, PBSD_WEIGHT, KEY_MOMENTUM, DIM = 0.07, 8.0, 1.5, 0.999, 128
LR_PER_256, SGD_MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
# The recipe's crop area as a fraction of the query image.
CROP_AREA = (0.05, 0.6)

# Backbones as dscl-core's ResNetConfig describes them (benches/src/cli.rs names them).
ARCHS = {
    "resnet18-cifar": ("cifar", 64, "basic", [2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet18": ("imagenet", 64, "basic", [2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet32": ("cifar", 16, "basic", [5, 5, 5], [16, 32, 64]),
    "resnet50": ("imagenet", 64, "bottleneck", [3, 4, 6, 3], [64, 128, 256, 512]),
    "tiny": ("cifar", 8, "basic", [1, 1, 1], [8, 16, 32]),
}


# ---------------------------------------------------------------------------------------------
# The network: torchvision's ResNet (v1.5: stride on the 3x3) with a choice of stem and stages.


def conv_bn(cin, cout, kernel, stride):
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, width, 3, stride)
        self.conv2, self.bn2 = conv_bn(width, width, 3, 1)
        self.last_bn = self.bn2
        self.downsample = shortcut(cin, width * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, width, 1, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = conv_bn(width, width * self.expansion, 1, 1)
        self.last_bn = self.bn3
        self.downsample = shortcut(cin, width * self.expansion, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


def shortcut(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(*conv_bn(cin, cout, 1, stride))


class ResNet(nn.Module):
    """The backbone without its classifier: forward returns the last feature map."""

    def __init__(self, arch):
        super().__init__()
        stem, stem_channels, block, blocks, widths = ARCHS[arch]
        block = BasicBlock if block == "basic" else Bottleneck
        kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
        self.conv1, self.bn1 = conv_bn(3, stem_channels, kernel, stride)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        self.stride = (4 if stem == "imagenet" else 1) << (len(blocks) - 1)
        cin = stem_channels
        for s, (count, width) in enumerate(zip(blocks, widths)):
            layer = []
            for b in range(count):
                layer.append(block(cin, width, 2 if s > 0 and b == 0 else 1))
                cin = width * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.stages = len(blocks)
        self.channels = cin
        # torchvision's initialisation with zero_init_residual=True (dscl-core's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn.weight)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return x


class Encoder(nn.Module):
    """Backbone + projection head. forward returns the normalised embeddings and the last
    feature map (the official code reads the map with a forward hook on layer4)."""

    def __init__(self, arch, dim=DIM):
        super().__init__()
        self.backbone = ResNet(arch)
        c = self.backbone.channels
        self.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, dim))

    def embed(self, pooled):
        # float(): under bf16 autocast the head runs in bf16; normalise and losses in fp32.
        return F.normalize(self.fc(pooled).float(), dim=1)

    def forward(self, x):
        fmap = self.backbone(x)
        return self.embed(torch.mean(fmap, dim=(2, 3))), fmap


# ---------------------------------------------------------------------------------------------
# ROI-align.


def roi_align_torch(features, boxes, output_size, spatial_scale, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align's math in plain torch (boxes: Tensor[R, 5] rows
    (batch_index, x1, y1, x2, y2)). Each output bin is a fixed linear combination of the map's
    values, so the bilinear taps of every bin's sampling points are summed into a weight matrix
    [R * bins, N * H * W] and the output is one matrix product with the map; autograd gives
    the bilinear scatter backward."""
    n, c, h, w = features.shape
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    r = boxes.shape[0]
    dev = features.device
    boxes = boxes.to(torch.float64)
    offset = 0.5 if aligned else 0.0
    batch_index = boxes[:, 0].long()
    x1, y1, x2, y2 = (boxes[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    if sampling_ratio > 0:
        grid_h = torch.full((r,), sampling_ratio, dtype=torch.long, device=dev)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / ph).long()
        grid_w = torch.ceil(roi_w / pw).long()
    count = (grid_h * grid_w).clamp(min=1).to(torch.float64)
    gh, gw = max(int(grid_h.max()), 1) if r else 1, max(int(grid_w.max()), 1) if r else 1

    # Every (roi, bin_y, bin_x, sample_y, sample_x) point, with a mask for the samples beyond
    # this roi's own grid (the grid size varies from box to box).
    iy = torch.arange(gh, device=dev, dtype=torch.float64)
    ix = torch.arange(gw, device=dev, dtype=torch.float64)
    by = torch.arange(ph, device=dev, dtype=torch.float64)
    bx = torch.arange(pw, device=dev, dtype=torch.float64)
    v = lambda t: t.view(r, 1, 1, 1, 1)  # noqa: E731
    y = v(y1) + by.view(1, ph, 1, 1, 1) * v(bin_h) + (iy.view(1, 1, 1, gh, 1) + 0.5) * v(
        bin_h / grid_h.clamp(min=1)
    )
    x = v(x1) + bx.view(1, 1, pw, 1, 1) * v(bin_w) + (ix.view(1, 1, 1, 1, gw) + 0.5) * v(
        bin_w / grid_w.clamp(min=1)
    )
    y, x = torch.broadcast_tensors(y, x)
    in_grid = (iy.view(1, 1, 1, gh, 1) < v(grid_h)) & (ix.view(1, 1, 1, 1, gw) < v(grid_w))
    # torchvision's bilinear_interpolate: a point beyond [-1, size] contributes nothing;
    # [-1, 0] clamps to 0; at or past the last row / column both taps fall on it.
    keep = in_grid & (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y, x = y.clamp(min=0.0), x.clamp(min=0.0)
    y_low, x_low = y.floor().long().clamp(max=h - 1), x.floor().long().clamp(max=w - 1)
    y_high, x_high = (y_low + 1).clamp(max=h - 1), (x_low + 1).clamp(max=w - 1)
    ly = torch.where(y_low >= h - 1, torch.zeros_like(y), y - y_low)
    lx = torch.where(x_low >= w - 1, torch.zeros_like(x), x - x_low)
    hy, hx = 1.0 - ly, 1.0 - lx
    scale = keep.to(torch.float64) / v(count)

    row = torch.arange(r * ph * pw, device=dev).view(r, ph, pw, 1, 1).expand_as(y)
    plane = v(batch_index) * (h * w)
    weights = torch.zeros(r * ph * pw, n * h * w, dtype=torch.float64, device=dev)
    for yy, xx, tap in (
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ):
        flat = row * (n * h * w) + plane + yy * w + xx
        weights.view(-1).index_add_(0, flat.reshape(-1), (tap * scale).reshape(-1))
    values = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
    out = weights.to(features.dtype) @ values  # [R * bins, C]
    return out.view(r, ph, pw, c).permute(0, 3, 1, 2)


def check_roi_align(cases=200, tol=1e-12):
    """roi_align_torch against torchvision's, forward and backward in float64, on random maps
    and boxes (partly outside the map, some far below one feature cell), both sampling modes
    and both alignments."""
    from torchvision.ops import roi_align

    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for case in range(cases):
        n = int(torch.randint(1, 4, (), generator=gen))
        h, w = (int(v) for v in torch.randint(1, 9, (2,), generator=gen))
        scale = (1.0, 0.5, 1 / 8, 1 / 32)[case % 4]
        features = torch.randn(n, 3, h, w, dtype=torch.float64, generator=gen)
        features.requires_grad_(True)
        rois = 7
        size = torch.tensor([w / scale, h / scale], dtype=torch.float64)
        corner = (torch.rand(rois, 2, dtype=torch.float64, generator=gen) * 1.4 - 0.2) * size
        extent = torch.rand(rois, 2, dtype=torch.float64, generator=gen) * size
        extent *= 1.2 if case % 3 else 0.05
        index = torch.randint(0, n, (rois, 1), generator=gen).to(torch.float64)
        boxes = torch.cat([index, corner, corner + extent], dim=1)
        for sampling_ratio in (-1, 2):
            for aligned in (False, True):
                args = (boxes, (2, 2), scale, sampling_ratio, aligned)
                want, got = roi_align(features, *args), roi_align_torch(features, *args)
                grad_out = torch.randn(want.shape, dtype=torch.float64, generator=gen)
                (d_want,) = torch.autograd.grad((want * grad_out).sum(), features)
                (d_got,) = torch.autograd.grad((got * grad_out).sum(), features)
                err = max((want - got).abs().max().item(), (d_want - d_got).abs().max().item())
                worst = max(worst, err)
    assert worst <= tol, f"roi_align_torch differs from torchvision's by {worst:.1e}"
    print(f"check: roi_align_torch matches torchvision.ops.roi_align (forward and backward, "
          f"float64, {cases * 4} cases) to {worst:.1e} <= {tol:.0e}")


def pick_roi_align(choice):
    if choice == "torch":
        return roi_align_torch, "torch"
    try:
        from torchvision.ops import roi_align

        return roi_align, "torchvision"
    except Exception:  # torchvision absent, or built for another torch
        return roi_align_torch, "torch"


# ---------------------------------------------------------------------------------------------
# The stage-1 model and step, MoCo style.


class Stage1:
    def __init__(self, a, device, roi_align):
        self.a = a
        self.roi_align = roi_align
        self.encoder_q = Encoder(a.arch).to(device)
        self.encoder_k = Encoder(a.arch).to(device)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.encoder_q.train()
        self.encoder_k.train()
        # The official start: random unit keys (stored d x K) and random labels, taken as full.
        self.queue = F.normalize(torch.randn(DIM, a.queue, device=device), dim=0)
        self.queue_labels = torch.randint(0, a.classes, (a.queue,), device=device)
        self.queue_ptr = 0
        self.opt = torch.optim.SGD(
            self.encoder_q.parameters(),
            lr=LR_PER_256 * a.batch / 256,
            momentum=SGD_MOMENTUM,
            weight_decay=WEIGHT_DECAY,
        )
        dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
        self.autocast = lambda: torch.autocast(  # noqa: E731
            device.type, dtype=dtype, enabled=a.precision == "bf16"
        )

    @torch.no_grad()
    def momentum_update_key_encoder(self):
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(KEY_MOMENTUM).add_(param_q.detach(), alpha=1.0 - KEY_MOMENTUM)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys, labels):
        rows = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.a.queue
        self.queue[:, rows] = keys.T
        self.queue_labels[rows] = labels
        self.queue_ptr = (self.queue_ptr + keys.shape[0]) % self.a.queue

    @torch.no_grad()
    def teachers(self, fmap, boxes):
        """[C * B, d] crop-major: ROI-align 2x2 on each box, averaged, head, normalise."""
        scale = 1.0 / self.encoder_q.backbone.stride
        if self.a.crop_passes == "batched":
            pooled = self.roi_align(fmap.float(), boxes, (2, 2), scale, -1, False)
            return self.encoder_q.embed(torch.mean(pooled, dim=(2, 3)))
        per_crop = []
        for bb in boxes.view(self.a.crops, self.a.batch, 5):
            pooled = self.roi_align(fmap.float(), bb, (2, 2), scale, -1, False)
            per_crop.append(self.encoder_q.embed(torch.mean(pooled, dim=(2, 3))))
        return torch.cat(per_crop)

    def students(self, crops):
        if self.a.crop_passes == "batched":
            return self.encoder_q(crops)[0]
        per_crop = crops.view(self.a.crops, self.a.batch, *crops.shape[1:])
        return torch.cat([self.encoder_q(c)[0] for c in per_crop])

    def step(self, im_q, im_k, crops, boxes, labels):
        a = self.a
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            q, fmap = self.encoder_q(im_q)
            t = self.teachers(fmap, boxes)
            s = self.students(crops)
            with torch.no_grad():
                self.momentum_update_key_encoder()
                k, _ = self.encoder_k(im_k)
        dscl = dscl_official(q, k, self.queue, labels, self.queue_labels, TAU, BETA)
        pbsd = pbsd_official(
            t.view(a.crops, a.batch, DIM), s.view(a.crops, a.batch, DIM), k, self.queue, TAU
        )
        loss = dscl + PBSD_WEIGHT * pbsd
        loss.backward()
        self.opt.step()
        self.dequeue_and_enqueue(k, labels)
        return loss.item(), dscl.item(), pbsd.item()


def random_crop_boxes(crops, batch, image, device):
    """[C * B, 5] rows (i, x1, y1, x2, y2), crop-major, in query pixels: random boxes inside the
    image, area 0.05 to 0.6 of it, aspect 3/4 to 4/3 (as dscl_step draws them)."""
    n = crops * batch
    area = CROP_AREA[0] + torch.rand(n, dtype=torch.float64) * (CROP_AREA[1] - CROP_AREA[0])
    aspect = torch.exp(math.log(3 / 4) + torch.rand(n, dtype=torch.float64) * math.log(16 / 9))
    w = (image * torch.sqrt(area * aspect)).clamp(max=image)
    h = (image * torch.sqrt(area / aspect)).clamp(max=image)
    x1 = torch.rand(n, dtype=torch.float64) * (image - w)
    y1 = torch.rand(n, dtype=torch.float64) * (image - h)
    index = torch.arange(batch, dtype=torch.float64).repeat(crops)
    return torch.stack([index, x1, y1, x1 + w, y1 + h], dim=1).float().to(device)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--arch", default="resnet50", choices=list(ARCHS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--crops", type=int, default=5)
    p.add_argument("--queue", type=int, default=65536)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="inputs and initial weights")
    p.add_argument("--crop-passes", default="per-crop", choices=["batched", "per-crop"])
    p.add_argument(
        "--roi-align",
        default="auto",
        choices=["auto", "torch"],
        help="auto: torchvision's when it imports, else the plain-torch one; torch: always that",
    )
    p.add_argument(
        "--check-roi-align",
        action="store_true",
        help="check roi_align_torch against torchvision's (needs torchvision), then exit",
    )
    a = p.parse_args()
    if a.check_roi_align:
        check_roi_align()
        return
    for name in ("batch", "image", "crop", "crops", "queue", "classes", "steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must not be negative")

    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if a.device == "cuda":
        torch.backends.cudnn.benchmark = True  # the warm-up steps absorb the search
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    roi_align, roi_impl = pick_roi_align(a.roi_align)

    base = rss_kib("VmRSS")
    model = Stage1(a, device, roi_align)
    im_q = (torch.rand(a.batch, 3, a.image, a.image) * 2 - 1).to(device)
    im_k = (torch.rand(a.batch, 3, a.image, a.image) * 2 - 1).to(device)
    crops = (torch.rand(a.crops * a.batch, 3, a.crop, a.crop) * 2 - 1).to(device)
    boxes = random_crop_boxes(a.crops, a.batch, a.image, device)
    labels = torch.randint(0, a.classes, (a.batch,)).to(device)

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()

    def step():
        losses = model.step(im_q, im_k, crops, boxes, labels)
        sync()
        return losses

    start = time.perf_counter()
    first = None
    for i in range(a.warmup):
        step_start = time.perf_counter()
        losses = step()
        first = first or losses
        # As it happens, so a run stopped by a timeout still tells a step's cost.
        print(
            f"dscl_step_torch: warm-up step {i + 1} of {a.warmup}: "
            f"{time.perf_counter() - step_start:.2f} s, loss {losses[0]:.4f}",
            file=sys.stderr,
            flush=True,
        )
    warmup_s = time.perf_counter() - start
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        start = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - start)
        first = first or last
    times.sort()
    median = times[len(times) // 2]
    peak = rss_kib("VmHWM")
    params = sum(p.numel() for p in model.encoder_q.parameters())
    if a.device == "cuda":
        device_name = torch.cuda.get_device_name()
        gpu_peak = f"gpu_peak_mib={torch.cuda.max_memory_allocated() / 2**20:.1f} "
    else:
        device_name, gpu_peak = f"cpu_{torch.get_num_threads()}_threads", ""
    print(
        f"impl=torch device={a.device} device_name={device_name.replace(' ', '_')} "
        f"precision={a.precision} arch={a.arch} batch={a.batch} image={a.image} crop={a.crop} "
        f"crops={a.crops} queue={a.queue} classes={a.classes} seed={a.seed} params={params} "
        f"roi_align={roi_impl} crop_passes={a.crop_passes} warmup={a.warmup} steps={a.steps} "
        f"warmup_s={warmup_s:.2f} median_s={median:.4f} min_s={times[0]:.4f} "
        f"ms_per_step={median * 1e3:.1f} images_per_s={a.batch / median:.2f} "
        f"peak_rss_mib={peak / 1024:.1f} peak_extra_mib={(peak - base) / 1024:.1f} {gpu_peak}"
        f"loss_first={first[0]:.4f} dscl_first={first[1]:.4f} pbsd_first={first[2]:.4f} "
        f"loss_last={last[0]:.4f} torch={torch.__version__}",
        flush=True,
    )


if __name__ == "__main__":
    main()
