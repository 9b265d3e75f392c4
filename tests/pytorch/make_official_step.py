#!/usr/bin/env python3
"""A whole stage-1 fixture: three steps of the official DSCL + PBSD training, as the authors'
code runs it on 2 GPUs under DistributedDataParallel, simulated in one float64 process.

Regenerate (from the repository root; CPU builds of torch and torchvision are enough):

    pip install torch torchvision safetensors
    python3 tests/pytorch/make_official_step.py

This rewrites tests/data/official_step.safetensors, which tests/tests/official_step.rs loads and
replays with `DsclStep` (1e-9 relative on the f64 reference backend, 1e-4 on the CPU backend).

What is simulated, following the official `DSCL.forward_train` and main.py's `train` loop
(SY-Xuan/DSCL, dscl/DSCL.py and main.py), written here from their description:

* R = 2 replicas, each a whole model of its own (query encoder, key encoder, queue buffers) with
  its own optimizer, each taking b = B / R consecutive images of the global batch of B (the
  global batch is the replicas' batches in rank order). The collectives are done in memory:
  `concat_all_gather` is a concatenation in rank order, the shuffle permutation is the one
  given for the step (its `broadcast`), DDP's gradient all-reduce is the mean of the replicas'
  gradients, and DDP's `broadcast_buffers=True` copies rank 0's buffers (batch-norm running
  statistics of both encoders, the queue) into every other replica as each forward starts.
  No synchronised batch norm: every pass of every replica normalises with its own batch.
* Per replica: the query pass; the teachers (the last feature map, caught by a forward hook on
  the last stage as the official hook on `layer4`, ROI-aligned 2x2 on each crop's box, one
  box per image, averaged, through the head `fc`, normalised); the crops one crop set per pass
  (`for small_im_q in small_im_qs`), so C batch-norm passes; the momentum update of the key
  encoder; the key images shuffled across replicas (`_batch_shuffle_ddp`), the key pass on
  this replica's shuffled group, the keys restored (`_batch_unshuffle_ddp`); DSCL over
  [q; k; queue] and PBSD over [own key; queue] on this replica's rows and the shared queue;
  every replica's keys and labels enqueued in rank order (`_dequeue_and_enqueue`); loss =
  DSCL + lambda * PBSD; backward; all-reduce; `torch.optim.SGD` (momentum, weight decay).
* The loss formulas keep the official code's small constants (the 1e-12 in the log of the
  denominator and in the positive weights), which dscl's losses do not have. The script prints
  how far they move the stored results in the Rust test's measure (2.1e-12 relative: the
  whole of the f64 difference the test sees; `--no-eps --out FILE` writes the results
  without them, which dscl's f64 step matches to about 2e-14).

The network is dscl-core's `Encoder` at a tiny size, named as dscl names its tensors
(torchvision's backbone names; the official `fc` head as `head.0` / `head.2`): an ImageNet stem
(7x7 stride 2 + max-pool) of 8 channels, two stages of one basic block (8 and 16 channels;
the second with its 1x1 projection shortcut), stride 8, head 16 -> 16 -> 16. Images 24 px,
crops 12 px, B = 8 (R = 2, b = 4), C = 3 crops, K = 16 queue keys (two global batches, so the
third step's keys overwrite the first step's: the queue wraps), 4 classes.

Inputs are written in dscl's conventions: crops crop-major (`[C * B, 3, s, s]`, crop c of
image i at item c * B + i), boxes `[C * B, 5]` rows (i, x1, y1, x2, y2) in query-image pixels
with the global image index i (on multiples of 1/8 px, so f32 holds them exactly), the queue
`[K, d]` one key per row (the official buffer is its transpose, `d x K`), labels as int64,
key permutations `[steps, B]` (slot j of the shuffled key batch holds key image perm[j], so
replica g's key group is perm[g * b:(g + 1) * b]). The queue starts full, as the official
one: K random unit keys with random labels, write pointer 0.

Tensors in the file (f64 unless named int64):
  config.*: scalars (see CONFIG below), int64 for counts
  init.params.<name>             query encoder's initial parameters (key encoder = copy)
  init.state.<name>              initial running statistics of both encoders (0 / 1)
  init.queue [K, d], init.queue_labels [K] int64
  input.queries / input.keys [steps, B, 3, S, S], input.crops [steps, C * B, 3, s, s],
  input.boxes [steps, C * B, 5], input.labels [steps, B] int64,
  input.key_shuffle [steps, B] int64, input.lr [steps] (the official schedule's rate at
  input.epoch [steps], each step's fractional epoch)
  step.dscl / step.pbsd / step.total [steps]   means over the replicas (what DDP's gradient
                                               follows); step.replica_dscl / _pbsd [steps, R]
  final.params.<name>, final.velocity.<name>   query encoder and SGD momentum buffer
  final.key_params.<name>
  final.state.<name>, final.key_state.<name>   running statistics (rank 0's)
  final.queue [K, d], final.queue_labels [K] int64, final.queue_ptr [1] int64
"""

import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.ops import roi_align

torch.set_default_dtype(torch.float64)

OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "data", "official_step.safetensors"
)
SEED = 20240716

STEPS = 3
REPLICAS = 2
BATCH = 8  # global: REPLICAS x 4
CROPS = 3
IMAGE = 24
CROP = 12
QUEUE = 16  # 2 x BATCH: the third step wraps
DIM = 16
CLASSES = 4
TAU = 0.07
BETA = 8.0
PBSD_WEIGHT = 1.5
KEY_MOMENTUM = 0.9  # the official 0.999 would hide the key encoder's update in the last digits
SGD_MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Each step's learning rate from the official schedule: main.py's adjust_learning_rate, called
# every step at epoch + i / iters_per_epoch (linear warm-up from 0, then half a cosine). Here a
# run of 3 epochs with 1 of warm-up and 2 steps per epoch, of which the fixture replays global
# steps 1-3 (epochs 0.5, 1.0, 1.5): one on the warm-up line, two on the cosine. The Rust side
# computes the rates with its own schedule and must get these.
BASE_LR, WARMUP_EPOCHS, EPOCHS, ITERS_PER_EPOCH, FIRST_STEP = 0.4, 1, 3, 2, 1


def adjust_learning_rate(epoch):
    if epoch < WARMUP_EPOCHS:
        return BASE_LR * epoch / WARMUP_EPOCHS
    progress = (epoch - WARMUP_EPOCHS) / (EPOCHS - WARMUP_EPOCHS)
    return BASE_LR * 0.5 * (1.0 + math.cos(math.pi * progress))


STEP_EPOCHS = [(FIRST_STEP + t) / ITERS_PER_EPOCH for t in range(STEPS)]
LRS = [adjust_learning_rate(e) for e in STEP_EPOCHS]

STEM_CHANNELS = 8
WIDTHS = [8, 16]
STRIDE = 8  # stem 4, one stride-2 stage


# ---------------------------------------------------------------------------------------------
# The network: torchvision's ResNet layout (v1.5) at a tiny size, with torchvision's names.


class BasicBlock(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, width, 1, stride, 0, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TinyResNet(nn.Module):
    """`base_encoder(num_classes=dim)`: backbone, global average pool, fc."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = STEM_CHANNELS
        for s, width in enumerate(WIDTHS):
            setattr(self, f"layer{s + 1}", nn.Sequential(BasicBlock(cin, width, 2 if s else 1)))
            cin = width
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for s in range(len(WIDTHS)):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def dscl_name(name):
    """The official encoder's parameter name as dscl-core names it."""
    return name.replace("fc.", "head.", 1) if name.startswith("fc.") else name


# ---------------------------------------------------------------------------------------------
# The losses, as the official DSCLLoss and PBSDLoss compute them.


class DSCLLoss(nn.Module):
    def __init__(self, temperature, K, weighted_beta, eps):
        super().__init__()
        self.temperature, self.K, self.weighted_beta, self.eps = temperature, K, weighted_beta, eps

    def forward(self, features, labels):
        batch_size = (features.shape[0] - self.K) // 2
        labels = labels.contiguous().view(-1, 1)
        mask = torch.eq(labels[:batch_size], labels.T).to(features.dtype)
        anchor_dot_contrast = torch.div(
            torch.matmul(features[:batch_size], features.T), self.temperature
        )
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        anchor = torch.arange(batch_size).view(-1, 1)
        logits_mask = torch.scatter(torch.ones_like(mask), 1, anchor, 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        others = mask.sum(dim=1, keepdim=True) - 1.0
        class_weighted = torch.ones_like(mask) / (others + self.eps) * self.weighted_beta
        class_weighted = class_weighted.scatter(1, anchor + batch_size, 1.0)
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + self.eps)
        weighted = mask * class_weighted
        mean_log_prob_pos = (weighted * log_prob).sum(1) / weighted.sum(1)
        return (-mean_log_prob_pos).mean()


class PBSDLoss(nn.Module):
    """The official loss (its unused label mask left out)."""

    def __init__(self, temperature):
        super().__init__()
        self.temperature = temperature

    def forward(self, roi_features, small_qs, k, queue):
        loss = None
        for q1, small_q in zip(roi_features, small_qs):
            l_pos = torch.einsum("nc,nc->n", q1, k).unsqueeze(-1)
            l_neg = torch.einsum("nc,ck->nk", q1, queue.clone().detach())
            logits = torch.cat([l_pos, l_neg], dim=1)
            soft_target = F.softmax(logits / self.temperature, dim=1)
            l_pos2 = torch.einsum("nc,nc->n", small_q, k).unsqueeze(-1)
            l_neg2 = torch.einsum("nc,ck->nk", small_q, queue.clone().detach())
            logits2 = torch.cat([l_pos2, l_neg2], dim=1)
            prob2 = F.log_softmax(logits2 / self.temperature, dim=1)
            crop = -(soft_target.detach() * prob2).sum(1)
            loss = crop if loss is None else loss + crop
        return loss.mean() / len(small_qs)


# ---------------------------------------------------------------------------------------------
# One replica: the official DSCL module on one GPU, its forward cut where it meets a collective.


class Replica(nn.Module):
    def __init__(self, rank, init_params, init_queue, init_queue_labels, eps):
        super().__init__()
        self.rank, self.m, self.T = rank, KEY_MOMENTUM, TAU
        self.encoder_q = TinyResNet(DIM)
        self.encoder_k = TinyResNet(DIM)
        dim_mlp = self.encoder_q.fc.weight.shape[1]
        self.encoder_q.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_q.fc)
        self.encoder_k.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), self.encoder_k.fc)
        with torch.no_grad():
            for name, p in self.encoder_q.named_parameters():
                p.copy_(init_params[dscl_name(name)])
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", init_queue.T.clone())  # d x K, as the official buffer
        self.register_buffer("main_label_queue", init_queue_labels.view(1, -1).clone())
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.contrastive_loss = DSCLLoss(TAU, QUEUE, BETA, eps)
        self.distillation_loss = PBSDLoss(TAU)
        self.layer4_feat = None
        getattr(self.encoder_q, f"layer{len(WIDTHS)}").register_forward_hook(self._get_feature_hook)
        self.optimizer = torch.optim.SGD(
            self.parameters(), lr=LRS[0], momentum=SGD_MOMENTUM, weight_decay=WEIGHT_DECAY
        )

    def _get_feature_hook(self, module, input, output):
        self.layer4_feat = output

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    def forward_queries(self, im_q, small_im_qs, small_bbox_q):
        """Everything of forward_train before the key pass's collectives."""
        q = self.encoder_q(im_q)
        roi_features = []
        for bb in small_bbox_q:
            re_org_bb = [bb[i].unsqueeze(0) for i in range(bb.size(0))]
            pooled = roi_align(self.layer4_feat, re_org_bb, (2, 2), spatial_scale=1.0 / STRIDE)
            pooled = torch.mean(pooled, dim=(2, 3))
            roi_features.append(F.normalize(self.encoder_q.fc(pooled), dim=1))
        q = F.normalize(q, dim=1)
        split_small_qs = []
        for small_im_q in small_im_qs:
            split_small_qs.append(F.normalize(self.encoder_q(small_im_q), dim=1))
        return q, roi_features, split_small_qs

    @torch.no_grad()
    def forward_shuffled_keys(self, x_gather, idx_shuffle):
        """The key pass: momentum update, this rank's slots of the shuffled batch
        (`_batch_shuffle_ddp` after its all-gather and broadcast), the key encoder."""
        self._momentum_update_key_encoder()
        idx_this = idx_shuffle.view(REPLICAS, -1)[self.rank]
        return F.normalize(self.encoder_k(x_gather[idx_this]), dim=1)

    def losses(self, q, k, roi_features, split_small_qs, main_labels):
        features = torch.cat((q, k, self.queue.T.clone().detach()), dim=0)
        queue_labels = self.main_label_queue.squeeze(0).clone().detach()
        target = torch.cat((main_labels, main_labels, queue_labels), dim=0)
        contrastive = self.contrastive_loss(features, target)
        distillation = self.distillation_loss(roi_features, split_small_qs, k, self.queue)
        return contrastive, distillation

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys_all, labels_all):
        batch_size = keys_all.shape[0]
        ptr = int(self.queue_ptr)
        assert QUEUE % batch_size == 0
        self.queue[:, ptr : ptr + batch_size] = keys_all.T
        self.main_label_queue[:, ptr : ptr + batch_size] = labels_all.unsqueeze(0)
        self.queue_ptr[0] = (ptr + batch_size) % QUEUE


def broadcast_buffers(replicas):
    """DDP's broadcast_buffers at the start of each forward: rank 0's buffers everywhere."""
    src = dict(replicas[0].named_buffers())
    for r in replicas[1:]:
        with torch.no_grad():
            for name, buf in r.named_buffers():
                buf.copy_(src[name])


def all_reduce_gradients(replicas):
    """DDP's gradient all-reduce: every replica's gradient becomes the mean over replicas."""
    params = [list(r.parameters()) for r in replicas]
    for group in zip(*params):
        if group[0].grad is None:
            continue
        mean = sum(p.grad for p in group) / len(group)
        for p in group:
            p.grad = mean.clone()


def train(init, inputs, eps):
    """Runs the steps; returns per-step losses and rank 0's replica after them."""
    replicas = [
        Replica(g, init["params"], init["queue"], init["queue_labels"], eps)
        for g in range(REPLICAS)
    ]
    for r in replicas:
        r.train()
    b = BATCH // REPLICAS
    losses = {"dscl": [], "pbsd": [], "total": [], "replica_dscl": [], "replica_pbsd": []}
    for step in range(STEPS):
        broadcast_buffers(replicas)
        for r in replicas:
            for group in r.optimizer.param_groups:
                group["lr"] = LRS[step]  # adjust_learning_rate
        im_q, im_k, crops, boxes, labels = (
            inputs[k][step] for k in ("queries", "keys", "crops", "boxes", "labels")
        )
        idx_shuffle = inputs["key_shuffle"][step]
        outs = []
        for g, r in enumerate(replicas):
            rows = slice(g * b, (g + 1) * b)
            small_im_qs = [crops[c * BATCH : (c + 1) * BATCH][rows] for c in range(CROPS)]
            small_bbox = [boxes[c * BATCH : (c + 1) * BATCH][rows, 1:] for c in range(CROPS)]
            outs.append(r.forward_queries(im_q[rows], small_im_qs, small_bbox))
        # _batch_shuffle_ddp: the all-gather of the key images is the global batch itself.
        k_shuffled = [r.forward_shuffled_keys(im_k, idx_shuffle) for r in replicas]
        # _batch_unshuffle_ddp: gather the shuffled keys, each rank takes its own images back.
        k_gather = torch.cat(k_shuffled)
        idx_unshuffle = torch.argsort(idx_shuffle)
        ks = [k_gather[idx_unshuffle.view(REPLICAS, -1)[g]] for g in range(REPLICAS)]
        step_losses = []
        for g, r in enumerate(replicas):
            q, roi_features, small_qs = outs[g]
            own_labels = labels[g * b : (g + 1) * b]
            step_losses.append(r.losses(q, ks[g], roi_features, small_qs, own_labels))
        # concat_all_gather of keys and labels, then every rank's own enqueue.
        keys_all, labels_all = torch.cat(ks), labels
        for r in replicas:
            r._dequeue_and_enqueue(keys_all, labels_all)
        for r, (contrastive, distillation) in zip(replicas, step_losses):
            loss = contrastive + distillation * PBSD_WEIGHT
            r.optimizer.zero_grad()
            loss.backward()
        all_reduce_gradients(replicas)
        for r in replicas:
            r.optimizer.step()
        dscl = [c.item() for c, _ in step_losses]
        pbsd = [d.item() for _, d in step_losses]
        losses["replica_dscl"].append(dscl)
        losses["replica_pbsd"].append(pbsd)
        losses["dscl"].append(sum(dscl) / REPLICAS)
        losses["pbsd"].append(sum(pbsd) / REPLICAS)
        losses["total"].append(losses["dscl"][-1] + PBSD_WEIGHT * losses["pbsd"][-1])
        # Every replica holds the same parameters after the all-reduced step.
        for r in replicas[1:]:
            for p0, p in zip(replicas[0].parameters(), r.parameters()):
                assert torch.equal(p0, p)
    return losses, replicas[0]


def results(losses, rank0):
    out = {f"step.{k}": torch.tensor(v) for k, v in losses.items()}
    sgd_state = rank0.optimizer.state
    for name, p in rank0.encoder_q.named_parameters():
        out[f"final.params.{dscl_name(name)}"] = p.detach().clone()
        out[f"final.velocity.{dscl_name(name)}"] = sgd_state[p]["momentum_buffer"].clone()
    for name, p in rank0.encoder_k.named_parameters():
        out[f"final.key_params.{dscl_name(name)}"] = p.detach().clone()
    for prefix, enc in (("state", rank0.encoder_q), ("key_state", rank0.encoder_k)):
        for name, buf in enc.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                out[f"final.{prefix}.{name}"] = buf.clone()
    out["final.queue"] = rank0.queue.T.contiguous().clone()
    out["final.queue_labels"] = rank0.main_label_queue.view(-1).clone()
    out["final.queue_ptr"] = rank0.queue_ptr.clone()
    return out


# ---------------------------------------------------------------------------------------------
# Inputs.


def make_init(gen):
    """Initial weights (torchvision's scheme for convolutions and linears; batch-norm scales
    and shifts drawn away from 1 and 0 so every one of them matters), the official queue."""
    net = TinyResNet(DIM)
    dim_mlp = net.fc.weight.shape[1]
    net.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), net.fc)
    params = {}
    for name, p in net.named_parameters():
        if ".bn" in name or name.startswith("bn") or "downsample.1" in name:
            z = torch.randn(p.shape, generator=gen)
            v = 1.0 + 0.2 * z if name.endswith("weight") else 0.1 * z
        elif p.dim() == 4:  # kaiming_normal_, fan_out, relu
            fan_out = p.shape[0] * p.shape[2] * p.shape[3]
            v = torch.randn(p.shape, generator=gen) * (2.0 / fan_out) ** 0.5
        else:  # nn.Linear's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / p.shape[-1] ** 0.5 if p.dim() == 2 else 1.0 / dim_mlp**0.5
            v = (torch.rand(p.shape, generator=gen) * 2 - 1) * bound
        params[dscl_name(name)] = v
    state = {}
    for name, buf in net.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            state[name] = buf.clone()
    queue = F.normalize(torch.randn(DIM, QUEUE, generator=gen), dim=0).T.contiguous()
    queue_labels = torch.randint(0, CLASSES, (QUEUE,), generator=gen)
    return {"params": params, "state": state, "queue": queue, "queue_labels": queue_labels}


def make_boxes(gen):
    """[C * B, 5] rows (i, x1, y1, x2, y2), crop-major, inside the query image, area 0.05 to
    0.6 of it, on multiples of 1/8 px."""
    n = CROPS * BATCH
    area = 0.05 + torch.rand(n, generator=gen) * 0.55
    aspect = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * torch.log(torch.tensor(4 / 3)))
    w = (IMAGE * torch.sqrt(area * aspect)).clamp(max=IMAGE)
    h = (IMAGE * torch.sqrt(area / aspect)).clamp(max=IMAGE)
    x1 = torch.rand(n, generator=gen) * (IMAGE - w)
    y1 = torch.rand(n, generator=gen) * (IMAGE - h)
    snap = lambda t: torch.round(t * 8) / 8  # noqa: E731
    x1, y1 = snap(x1), snap(y1)
    x2, y2 = (snap(x1 + w)).clamp(max=IMAGE), (snap(y1 + h)).clamp(max=IMAGE)
    index = torch.arange(BATCH, dtype=torch.float64).repeat(CROPS)
    return torch.stack([index, x1, y1, x2, y2], dim=1)


def make_step_inputs(gen, patterns):
    """One step's batch, shaped like real views: each image its class's pattern plus noise;
    the query and key views that image plus their own noise; each crop the query view's
    region under its box resampled to CROP x CROP (bilinear) plus noise."""
    labels = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    images = patterns[labels] + 0.8 * torch.randn(BATCH, 3, IMAGE, IMAGE, generator=gen)
    view = lambda: images + 0.2 * torch.randn(images.shape, generator=gen)  # noqa: E731
    queries, keys = view(), view()
    boxes = make_boxes(gen)
    crops = roi_align(queries, boxes, (CROP, CROP), 1.0, 2, True)
    crops = crops + 0.2 * torch.randn(crops.shape, generator=gen)
    return queries, keys, crops, boxes, labels


def make_inputs(gen):
    patterns = torch.randn(CLASSES, 3, IMAGE, IMAGE, generator=gen)
    steps = [make_step_inputs(gen, patterns) for _ in range(STEPS)]
    names = ("queries", "keys", "crops", "boxes", "labels")
    inputs = {name: torch.stack([s[i] for s in steps]) for i, name in enumerate(names)}
    perms = [torch.randperm(BATCH, generator=gen) for _ in range(STEPS)]
    inputs["key_shuffle"] = torch.stack(perms)
    inputs["lr"] = torch.tensor(LRS, dtype=torch.float64)
    inputs["epoch"] = torch.tensor(STEP_EPOCHS, dtype=torch.float64)
    return inputs


CONFIG = {
    "steps": STEPS,
    "replicas": REPLICAS,
    "batch": BATCH,
    "crops": CROPS,
    "image_size": IMAGE,
    "crop_size": CROP,
    "queue_len": QUEUE,
    "dim": DIM,
    "num_classes": CLASSES,
    "stem_channels": STEM_CHANNELS,
    "widths": WIDTHS,
    "temperature": TAU,
    "beta": BETA,
    "pbsd_weight": PBSD_WEIGHT,
    "key_momentum": KEY_MOMENTUM,
    "sgd_momentum": SGD_MOMENTUM,
    "weight_decay": WEIGHT_DECAY,
}


def max_rel(got, expected, floor=True):
    """tests/tests/official_step.rs's measure: each entry's error relative to the entry or,
    where it is smaller, to the tensor's root-mean-square magnitude (losses: no floor)."""
    got, expected = got.double(), expected.double()
    rms = expected.pow(2).mean().sqrt().item() if floor else 0.0
    return ((got - expected).abs() / expected.abs().clamp(min=rms)).max().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=OUT)
    p.add_argument(
        "--no-eps",
        action="store_true",
        help="write the results of the losses without the official 1e-12 constants "
        "(a diagnostic: the committed fixture keeps them)",
    )
    a = p.parse_args()

    gen = torch.Generator().manual_seed(SEED)
    init = make_init(gen)
    inputs = make_inputs(gen)
    official = results(*train(init, inputs, eps=1e-12))
    plain = results(*train(init, inputs, eps=0.0))
    # How far the official 1e-12 constants move the results (dscl's losses have none).
    effect = max(max_rel(plain[k], official[k], not k.startswith("step.")) for k in official)
    print(f"the official 1e-12 constants move the results by at most {effect:.1e} relative")
    res = plain if a.no_eps else official
    losses = {k[len("step."):]: res[k].tolist() for k in res if k.startswith("step.")}

    tensors = {}
    for k, v in CONFIG.items():
        dtype = torch.float64 if isinstance(v, float) else torch.int64
        tensors[f"config.{k}"] = torch.tensor(v if isinstance(v, list) else [v], dtype=dtype)
    for name, v in init["params"].items():
        tensors[f"init.params.{name}"] = v
    for name, v in init["state"].items():
        tensors[f"init.state.{name}"] = v
    tensors["init.queue"] = init["queue"]
    tensors["init.queue_labels"] = init["queue_labels"]
    for k, v in inputs.items():
        tensors[f"input.{k}"] = v
    tensors.update(res)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, a.out, metadata={"source": "tests/pytorch/make_official_step.py"})
    size = os.path.getsize(a.out)
    print(f"wrote {a.out}: {len(tensors)} tensors, {size / 1024:.0f} KiB")
    print("losses per step (mean over replicas):")
    for s in range(STEPS):
        print(
            f"  step {s}: dscl {losses['dscl'][s]:.12f} pbsd {losses['pbsd'][s]:.12f} "
            f"replicas dscl {losses['replica_dscl'][s]} pbsd {losses['replica_pbsd'][s]}"
        )


if __name__ == "__main__":
    main()
