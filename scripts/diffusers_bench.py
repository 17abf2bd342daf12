#!/usr/bin/env python3
"""diffusers' side of `vdm bench --size ddpm-small|ddpm-cifar`: the same DDPM U-Net as a
`UNet2DModel`, the same training step and the same sampling work, timed the way `vdm bench`
times vdm-rs, printed as the same figures.

    python3 scripts/diffusers_bench.py --size ddpm-small [--batch-size 64] [--steps 10]
        [--sample-steps 20] [--threads 2] [--device cpu|cuda] [--json]

One training step, as vdm-rs's DDPM trainer takes it (`RunConfig::ddpm_digits`'s settings):
L_simple (t uniform in 0..T-1, ε-prediction, mean squared error) on the batch, backward,
the global gradient norm clipped to 1, AdamW (lr 1e-3, β = (0.9, 0.99), ε = 1e-8, weight decay
0.01), the EMA update, and the loss read back. Sampling: the network under no_grad and
DDIMScheduler's step with η = 1 (vdm-rs samples DDPM with DDIM, η = 1, for fewer than T steps).
Both after two warm-up steps. Needs `pip install torch diffusers`.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from diffusers_reference import DDPM, SIZES as REFERENCE_SIZES  # noqa: E402
from pytorch_reference import report, timed_steps  # noqa: E402

SIZES = {
    # vdm-rs's UNetConfig::digits(): ch 32, ch_mult (1, 2), 2 blocks, attention at 4×4, no dropout.
    "ddpm-small": (dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        dropout=0.0,
    ), 64),
    # DDPM's CIFAR-10 network (google/ddpm-cifar10-32), dropout 0.1.
    "ddpm-cifar": (dict(REFERENCE_SIZES["cifar"], dropout=0.1), 32),
}
EMA_DECAY = 0.999


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="ddpm-small")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config, batch = SIZES[a.size]
    batch = a.batch_size or batch
    dev = torch.device(a.device)
    model = UNet2DModel(**dict(DDPM, **config)).to(dev).train()
    ema = [q.detach().clone() for q in model.parameters()]
    params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    c, s = config["in_channels"], config["sample_size"]
    x0 = torch.randint(0, 256, (batch, c, s, s), device=dev).float() / 127.5 - 1.0
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    step = 0

    def train_step():
        nonlocal step
        opt.zero_grad(set_to_none=True)
        t = torch.randint(0, 1000, (batch,), device=dev)
        noise = torch.randn_like(x0)
        eps_hat = model(train_scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(eps_hat, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [q.detach() for q in model.parameters()], 1.0 - decay)
        step += 1
        return loss.item()

    train_s = timed_steps(train_step, a.steps)

    model.eval()
    with torch.no_grad():
        for q, e in zip(model.parameters(), ema):
            q.copy_(e)
    sampler = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")

    def sample(steps):
        sampler.set_timesteps(steps)
        z = torch.randn(batch, c, s, s, device=dev)
        for t in sampler.timesteps:
            z = sampler.step(model(z, t).sample, t, z, eta=1.0).prev_sample
        sync()
        return z

    with torch.no_grad():
        sample(2)
        start = time.perf_counter()
        sample(a.sample_steps)
        sample_s = time.perf_counter() - start

    report("diffusers", a, params, batch, train_s, sample_s)

if __name__ == "__main__":
    main()
