"""Writes tests/data/torchvision_resnet_tensors.json: the name and shape of every parameter and
running statistic of torchvision's resnet18/34/50 (1000 classes), so the Rust layouts can be
checked against them without Python. Run from the repository root:

    python3 tests/pytorch/make_torchvision_names.py
"""
import json

import torchvision

out = {}
for arch in ["resnet18", "resnet34", "resnet50"]:
    model = getattr(torchvision.models, arch)(weights=None)
    out[arch] = {
        "params": [[n, list(p.shape)] for n, p in model.named_parameters()],
        "state": [
            [n, list(b.shape)]
            for n, b in model.named_buffers()
            if not n.endswith("num_batches_tracked")
        ],
        "param_count": sum(p.numel() for p in model.parameters()),
    }
with open("tests/data/torchvision_resnet_tensors.json", "w") as f:
    json.dump(out, f, indent=0)
    f.write("\n")
print({k: v["param_count"] for k, v in out.items()})
