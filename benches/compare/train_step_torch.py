"""One SGD training step of a torchvision ResNet in PyTorch eager float32 on the CPU: the
reference for `train_step` (benches/src/bin/train_step.rs). Same step: forward, cross-entropy,
backward, SGD (momentum 0.9, weight decay 5e-4); same timing (one warm-up step, then the median
of --steps) and the same memory measure (peak RSS above the RSS before the model was built).

    python3 benches/compare/train_step_torch.py --arch resnet18-cifar --batch 128 --image 32
"""
import argparse
import time

import torch
import torchvision

from proc_status import rss_kib


def model_for(arch):
    if arch == "resnet18-cifar":
        m = torchvision.models.resnet18(num_classes=10)
        m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
        return m, 10
    if arch == "resnet18":
        return torchvision.models.resnet18(num_classes=1000), 1000
    if arch == "resnet50":
        return torchvision.models.resnet50(num_classes=1000), 1000
    raise SystemExit(f"unknown --arch {arch}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18-cifar")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda (float32, TF32 off)")
    a = p.parse_args()
    if a.device == "cuda":
        # The same arithmetic as the Rust step's default fp32 path.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    base = rss_kib("VmRSS")
    model, classes = model_for(a.arch)
    model = model.to(a.device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = (torch.rand(a.batch, 3, a.image, a.image) * 2 - 1).to(a.device)
    y = torch.randint(0, classes, (a.batch,)).to(a.device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    first = step()
    times = []
    loss = first
    for _ in range(a.steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    peak = rss_kib("VmHWM")
    params = sum(p.numel() for p in model.parameters())
    print(
        f"impl=torch device={a.device} arch={a.arch} batch={a.batch} image={a.image} threads={torch.get_num_threads()} "
        f"params={params} median_s={median:.4f} min_s={times[0]:.4f} "
        f"images_per_s={a.batch / median:.2f} peak_rss_mib={peak / 1024:.1f} "
        f"peak_extra_mib={(peak - base) / 1024:.1f} loss_first={first:.4f} loss_last={loss:.4f} "
        f"torch={torch.__version__}"
    )


if __name__ == "__main__":
    main()
