#!/usr/bin/env python3
"""The stage-1 loader's throughput in PyTorch, against `loader_timing` (dscl's loader) on the
same files: decode each JPEG with PIL, then the published stage-1 views of it (the official
loaders' torchvision transforms): the query and key RandomResizedCrop(224, scale (0.08, 1)), the
query's ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, RandomGrayscale(0.2), PIL GaussianBlur
(sigma 0.1-2) with p 0.5 and flip; the key's ColorJitter(0.4, 0.4, 0.4, 0) always and flip; and
C = 5 crops of the query view, each RandomResizedCrop(64, scale (0.05, 0.6)) with the query's
colour operations; every view ToTensor + Normalize. A DataLoader with `--workers` worker
processes and batches of `--batch` runs over the whole set `--passes` times; the first batch
(worker start-up) is left out of the rate.

Make the files first (500 x 375 JPEGs, quality 90, smooth random content, in `--classes`
folders):

    python3 benches/compare/loader_torch.py --make /tmp/jpegs --count 512
    python3 benches/compare/loader_torch.py --root /tmp/jpegs --workers 2

Prints one line: impl=torch workers=.. images=.. seconds=.. images_per_s=.. per_worker=..
"""
import argparse
import os
import random
import time


def make(root, count, classes, seed):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 375, 500
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(count):
        planes = []
        for _ in range(3):
            v = np.zeros((h, w), np.float32)
            for _ in range(4):
                fx, fy = rng.uniform(0.002, 0.05, 2)
                px, py = rng.uniform(0, 6.3, 2)
                v += np.sin(xx * fx * 6.3 + px) * np.cos(yy * fy * 6.3 + py)
            v += rng.normal(0, 0.15, (h, w))
            planes.append(v)
        rgb = np.stack(planes, -1)
        rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min() + 1e-6) * 255
        folder = os.path.join(root, f"class{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(rgb.astype(np.uint8)).save(
            os.path.join(folder, f"img{i:05d}.jpg"), quality=90
        )


class PilBlur:
    """The official loaders' GaussianBlur (MoCo v2): PIL's, with a uniform sigma."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Stage1Views:
    def __init__(self, size, crop, crops):
        import torchvision.transforms as T

        normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        self.global_crop = T.RandomResizedCrop(size, scale=(0.08, 1.0))
        colour = [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PilBlur()], p=0.5),
            T.RandomHorizontalFlip(),
        ]
        self.query = T.Compose(colour + [T.ToTensor(), normalize])
        self.key = T.Compose(
            [T.ColorJitter(0.4, 0.4, 0.4, 0.0), T.RandomHorizontalFlip(), T.ToTensor(), normalize]
        )
        self.small_crop = T.RandomResizedCrop(crop, scale=(0.05, 0.6))
        self.crops = crops

    def __call__(self, img):
        q = self.global_crop(img)
        k = self.global_crop(img)
        crops = [self.query(self.small_crop(q)) for _ in range(self.crops)]
        return self.query(q), self.key(k), crops


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make", help="write the JPEGs into this folder and exit")
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--root", help="the folder of JPEGs to load")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image", type=int, default=224)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--crops", type=int, default=5)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.make:
        make(args.make, args.count, args.classes, args.seed)
        return

    import torch
    import torchvision

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    # The workers decode and transform; the main process only waits for them.
    torch.set_num_threads(1)
    data = torchvision.datasets.ImageFolder(
        args.root, transform=Stage1Views(args.image, args.crop, args.crops)
    )
    # One loader for every pass, its workers kept between passes (as a training run keeps them).
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch,
        num_workers=args.workers,
        shuffle=False,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    images, start = 0, None
    for _ in range(args.passes):
        for views, _labels in loader:
            if start is None:
                start = time.perf_counter()
                continue
            images += views[0].shape[0]
    seconds = time.perf_counter() - start
    rate = images / seconds
    print(
        f"impl=torch torch={torch.__version__} torchvision={torchvision.__version__} "
        f"workers={args.workers} batch={args.batch} image={args.image} crop={args.crop} "
        f"crops={args.crops} images={images} seconds={seconds:.3f} images_per_s={rate:.1f} "
        f"per_worker={rate / args.workers:.1f}"
    )


if __name__ == "__main__":
    main()
