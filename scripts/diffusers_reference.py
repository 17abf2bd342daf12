#!/usr/bin/env python3
"""A randomly initialised diffusers UNet2DModel in DDPM's layout, and its outputs on fixed inputs.

Writes OUT/config.json and OUT/diffusion_pytorch_model.safetensors (diffusers' save_pretrained),
OUT/scheduler_config.json (DDPMScheduler, linear betas), and OUT/reference.safetensors with
`x` [N, C, H, W], `t` [N] (float32 timesteps) and `out` (the model's output on them), for
`vdm`'s import to be compared against (backends/tests/diffusers.rs).

Needs torch, diffusers and safetensors (a virtualenv: pip install torch diffusers safetensors).

    python3 scripts/diffusers_reference.py --size small --out backends/tests/data/diffusers-small
    python3 scripts/diffusers_reference.py --size cifar --out /tmp/ddpm-cifar10   # 143 MB

`cifar` is google/ddpm-cifar10-32's configuration (35,746,307 parameters), built without the hub.
"""
import argparse
import os

import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

SIZES = {
    # A network with every kind of block (attention down, up and in the middle; a channel change
    # with its shortcut; both resamplings) that is small enough to commit as a test fixture.
    "small": dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ),
    "cifar": dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
    ),
}
# What makes a UNet2DModel DDPM's network (google/ddpm-cifar10-32's settings).
DDPM = dict(flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, attention_head_dim=None, norm_eps=1e-6, dropout=0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = UNet2DModel(**SIZES[args.size], **DDPM).eval()
    # diffusers zero-initialises no layer, but DDPM's code zero-initialises the last convolution of
    # each block and of the network: keep diffusers' random values, so that every layer shows.
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").save_pretrained(args.out)

    c, s = model.config.in_channels, model.config.sample_size
    x = torch.randn(args.batch, c, s, s)
    t = torch.tensor([0, 10, 500, 999] * ((args.batch + 3) // 4))[: args.batch]
    with torch.no_grad():
        out = model(x, t).sample
    scheduler = DDPMScheduler.from_pretrained(args.out)
    # DDPMScheduler's posterior variance β̃_t ("fixed_small") for t = 1 … T−1.
    posterior = torch.stack([scheduler._get_variance(t) for t in range(1, scheduler.config.num_train_timesteps)])
    save_file({"x": x.contiguous(), "t": t.float().contiguous(), "out": out.contiguous(),
               "betas": scheduler.betas.contiguous(), "alphas_cumprod": scheduler.alphas_cumprod.contiguous(),
               "posterior_variance": posterior.float().contiguous()},
              os.path.join(args.out, "reference.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.size}: {params} parameters, output |max| {out.abs().max().item():.4f}, written to {args.out}")


if __name__ == "__main__":
    main()
