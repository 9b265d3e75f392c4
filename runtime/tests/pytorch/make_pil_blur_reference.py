"""Pillow's Gaussian blur on fixed images, for runtime/src/augment's cross-check test.

The official loaders blur with `img.filter(ImageFilter.GaussianBlur(radius=sigma))` on 8-bit PIL
images (dscl/loader_roi.py, class GaussianBlur). This script blurs deterministic RGB images of
32, 64 and 224 px (and two odd shapes for the edge handling) with a few sigmas and writes, per
image, one PNG: the input on top, then the blurred outputs in the order of `sigmas`, stacked
vertically. pil_blur.json lists the files and the sigmas. The Rust test
(runtime/src/augment/reference.rs) reads only these files, so `cargo test` needs no Python; rerun
this only to refresh them (needs only Pillow):

    python3 runtime/tests/pytorch/make_pil_blur_reference.py
"""

import json
import os

import PIL
from PIL import Image, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "pil_blur")

# The blur's range in the official recipe is [0.1, 2.0]; 0.6180339887498949 is an arbitrary
# non-round value; 3.7 and 9.0 exercise boxes wider than the small images.
SIGMAS = [0.1, 0.6180339887498949, 1.3, 2.0]
CASES = [
    (32, 32, SIGMAS),
    (64, 64, SIGMAS),
    (224, 224, [0.1, 1.3, 2.0]),
    (37, 23, [0.75, 2.0, 3.7]),
    (2, 5, [1.0, 2.0, 9.0]),
]


def value(c, x, y, w, h):
    """A deterministic 8-bit value: checkers, noise, impulses and a gradient with stripes, one
    per quarter of the image, so every blur sees hard edges, isolated pixels and texture."""
    q = (2 * x // w) + 2 * (2 * y // h)
    if q == 0:
        return 235 if ((x // 3 + y // 3 + c) % 2) else 20
    if q == 1:
        v = (x * 73856093) ^ (y * 19349663) ^ (c * 83492791)
        return ((v * 2654435761) >> 13) & 255
    if q == 2:
        return 255 if (x * 7 + y * 13 + c * 5) % 23 == 0 else 8
    return 255 if y % 9 == 4 else ((x * 255) // max(w - 1, 1) + 40 * c) % 256


def make_input(w, h):
    img = Image.new("RGB", (w, h))
    img.putdata([tuple(value(c, x, y, w, h) for c in range(3)) for y in range(h) for x in range(w)])
    return img


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    manifest = {"pillow": PIL.__version__, "cases": []}
    for w, h, sigmas in CASES:
        src = make_input(w, h)
        sheet = Image.new("RGB", (w, h * (1 + len(sigmas))))
        sheet.paste(src, (0, 0))
        for i, sigma in enumerate(sigmas):
            sheet.paste(src.filter(ImageFilter.GaussianBlur(radius=sigma)), (0, h * (i + 1)))
        name = f"blur_{w}x{h}.png"
        sheet.save(os.path.join(OUT_DIR, name), optimize=True)
        manifest["cases"].append({"file": name, "width": w, "height": h, "sigmas": sigmas})
    with open(os.path.join(OUT_DIR, "pil_blur.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print("wrote", OUT_DIR)


if __name__ == "__main__":
    main()
