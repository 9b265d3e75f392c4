"""Loads a dscl checkpoint into torchvision's ResNet and reports what is missing/unexpected.

    python3 tests/pytorch/check_checkpoint_torchvision.py OUT/stage1.safetensors resnet50

A stage-1 checkpoint of a ResNet-50 run must load with strict=False leaving only fc.weight and
fc.bias missing (its head, key encoder, optimizer and queue are extra keys torchvision ignores);
a linear.safetensors must load with strict=True.
"""
import sys

import torch
import torchvision
from safetensors.torch import load_file

path, arch = sys.argv[1], sys.argv[2]
state = load_file(path)
model = getattr(torchvision.models, arch)(weights=None)
result = model.load_state_dict(state, strict=False)
print("missing:", result.missing_keys)
extra = sorted({k.split(".")[0] for k in result.unexpected_keys})
print("unexpected key prefixes:", extra)
assert set(result.missing_keys) <= {"fc.weight", "fc.bias"}, result.missing_keys
loaded = model.state_dict()
for k, v in state.items():
    if k in loaded:
        assert torch.equal(loaded[k], v), k
print("ok: every backbone tensor loaded unchanged")
