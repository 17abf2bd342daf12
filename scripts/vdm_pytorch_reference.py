#!/usr/bin/env python3
"""A VDM in PyTorch's layout, made by PyTorch: the test fixture of `vdm_backends::pytorch_layout`.

    python3 scripts/vdm_pytorch_reference.py --out backends/tests/data/vdm-pytorch-small

Builds `scripts/pytorch_reference.py`'s ScoreNet (a small one with every kind of layer: Fourier
features, ResNet blocks with and without a shortcut, attention) and the linear schedule's `b`,
`w`, gives every parameter seeded random values (VDM zero-initialises some layers; random values
make every one show), and writes the folder `vdm export` writes for such a model:
`config.json`, `model.safetensors` (`score.` + the ScoreNet's state_dict, `schedule.b`,
`schedule.w`), plus `reference.safetensors` with inputs `z`, `gamma` and the network's output
`out`. Needs `pip install torch safetensors`.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import GAMMA_MAX, GAMMA_MIN, ScoreNet  # noqa: E402

# channels, image size, n_embd, n_layer, groups, fourier exponents
SMALL = dict(channels=1, size=8, n=16, n_layer=1, groups=4, fourier=[3, 4])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    c, s = SMALL["channels"], SMALL["size"]
    net = ScoreNet(c, SMALL["n"], SMALL["n_layer"], SMALL["groups"], 0.0, SMALL["fourier"]).eval()
    with torch.no_grad():
        for q in net.parameters():
            q.copy_(0.2 * torch.randn_like(q))
    tensors = {f"score.{k}": v.contiguous() for k, v in net.state_dict().items()}
    tensors["schedule.b"] = torch.tensor([GAMMA_MIN])
    tensors["schedule.w"] = torch.tensor([GAMMA_MAX - GAMMA_MIN])
    os.makedirs(a.out, exist_ok=True)
    save_file(tensors, os.path.join(a.out, "model.safetensors"))
    config = {
        "format": "vdm-rs VDM",
        "format_version": 1,
        "image_shape": [c, s, s],
        "model": {
            "score": {"n_embd": SMALL["n"], "n_layer": SMALL["n_layer"], "groups": SMALL["groups"], "dropout": 0.0,
                      "fourier_exponents": SMALL["fourier"], "gamma_min": GAMMA_MIN, "gamma_max": GAMMA_MAX},
            "schedule": {"kind": "scalar", "gamma_min": GAMMA_MIN, "gamma_max": GAMMA_MAX},
        },
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    z = torch.randn(4, c, s, s)
    gamma = torch.tensor([-13.3, -5.0, 0.0, 5.0])
    with torch.no_grad():
        out = net(z, gamma)
    save_file({"z": z, "gamma": gamma, "out": out.contiguous()}, os.path.join(a.out, "reference.safetensors"))
    params = sum(q.numel() for q in net.parameters())
    print(f"{params} parameters, output |max| {out.abs().max().item():.4f}, written to {a.out}")


if __name__ == "__main__":
    main()
