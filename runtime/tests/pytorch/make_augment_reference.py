"""Reference outputs of torchvision's tensor ops for runtime/src/augment's cross-check test.

Writes augment_reference.json next to this file. The Rust test (runtime/src/augment/reference.rs)
reads that file, so `cargo test` needs no Python; rerun this only to refresh it:

    python3 runtime/tests/pytorch/make_augment_reference.py
"""

import json
import os

import torch
import torchvision
import torchvision.transforms.functional as F

W, H = 11, 9


def input_image():
    img = torch.empty(3, H, W, dtype=torch.float32)
    for c in range(3):
        for y in range(H):
            for x in range(W):
                img[c, y, x] = ((c * 7 + y * 13 + x * 29) % 31) / 30.0
    return img


def flat(t):
    return [round(float(v), 7) for v in t.reshape(-1)]


def main():
    img = input_image()
    out = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "width": W,
        "height": H,
        "input": flat(img),
        "resize": [],
        "resized_crop": [],
        "jitter": [],
        "blur": [],
        "eval": [],
    }
    for w, h in [(5, 4), (4, 3), (2, 2), (1, 1), (17, 13), (15, 14), (7, 20), (11, 9)]:
        r = F.resize(img, [h, w], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        out["resize"].append({"width": w, "height": h, "output": flat(r)})
    for top, left, ch, cw, w, h in [(1, 2, 6, 7, 4, 3), (0, 3, 5, 5, 12, 12), (2, 0, 7, 11, 6, 5)]:
        r = F.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
        out["resized_crop"].append(
            {"x": left, "y": top, "crop_width": cw, "crop_height": ch,
             "width": w, "height": h, "output": flat(r)}
        )
    ops = {
        "brightness": F.adjust_brightness,
        "contrast": F.adjust_contrast,
        "saturation": F.adjust_saturation,
        "hue": F.adjust_hue,
    }
    for name, factor in [("brightness", 1.37), ("brightness", 0.61), ("contrast", 1.33),
                         ("contrast", 0.62), ("saturation", 1.39), ("saturation", 0.65),
                         ("hue", 0.08), ("hue", -0.09), ("hue", 0.5)]:
        out["jitter"].append({"op": name, "factor": factor, "output": flat(ops[name](img, factor))})
    out["jitter"].append({"op": "grayscale", "factor": 0.0, "output": flat(F.rgb_to_grayscale(img, 3))})
    for k, sigma in [(3, 0.7), (5, 1.3), (7, 2.0)]:
        b = F.gaussian_blur(img, [k, k], [sigma, sigma])
        out["blur"].append({"kernel": k, "sigma": sigma, "output": flat(b)})
    # The evaluation view: Resize(round(S / 0.875)) + CenterCrop(S), at sizes small enough to
    # keep the file small (the Rust test lowers eval_center_crop_min_size to use this path).
    for size in [8, 6, 5]:
        short = round(size / 0.875)
        e = F.center_crop(F.resize(img, short, antialias=True), [size, size])
        out["eval"].append({"size": size, "output": flat(e)})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "augment_reference.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote", path)


if __name__ == "__main__":
    main()
