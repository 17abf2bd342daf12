#!/usr/bin/env python3
"""The PyTorch reference for `vdm bench`: VDM's score network (the same architecture, parameter
count and initial behaviour as vdm-rs's `ScoreNet`), its continuous-time VLB with a learned scalar
schedule, AdamW, timed the way `vdm bench` times vdm-rs.

    python3 scripts/pytorch_reference.py --size tiny [--batch-size 64] [--steps 10]
        [--sample-steps 20] [--threads 2] [--compile] [--device cpu|cuda] [--json]

Prints the parameter count, training images/s (after two warm-up steps; each step reads the loss
back), milliseconds per network evaluation in sampling (no autograd), and the peak resident memory.
Needs `pip install torch`; nothing else of vdm-rs uses Python.
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {
    # name: (channels, image size, n_embd, n_layer, groups, dropout, fourier exponents, batch)
    "tiny": (1, 8, 32, 2, 8, 0.0, [3, 4, 5, 6, 7, 8], 64),
    "small": (3, 32, 64, 4, 32, 0.1, [7, 8], 32),
    "cifar": (3, 32, 128, 32, 32, 0.1, [7, 8], 128),
}
GAMMA_MIN, GAMMA_MAX = -13.3, 5.0


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / (half - 1))
    args = t[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResnetBlock(nn.Module):
    def __init__(self, c_in, c_out, d_cond, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.cond_proj = nn.Linear(d_cond, c_out, bias=False)
        nn.init.zeros_(self.cond_proj.weight)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x, cond):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.cond_proj(cond)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.shortcut(x) if self.shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.q, self.k, self.v, self.proj_out = (nn.Linear(c, c) for _ in range(4))
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = self.q(t), self.k(t), self.v(t)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c), dim=2)
        return x + self.proj_out(weights @ v).transpose(1, 2).reshape(b, c, h, w)


class ScoreNet(nn.Module):
    """VDM's ScoreUNet (google-research/vdm), as vdm-rs's nn/score_unet.rs."""

    def __init__(self, channels, n, n_layer, groups, dropout, fourier):
        super().__init__()
        self.n, self.fourier = n, fourier
        self.dense0, self.dense1 = nn.Linear(n, 4 * n), nn.Linear(4 * n, 4 * n)
        self.conv_in = nn.Conv2d(channels * (1 + 2 * len(fourier)), n, 3, padding=1)
        block = lambda c_in: ResnetBlock(c_in, n, 4 * n, groups, dropout)
        self.down = nn.ModuleList(block(n) for _ in range(n_layer))
        self.mid1, self.mid_attn, self.mid2 = block(n), AttnBlock(n, groups), block(n)
        self.up = nn.ModuleList(block(2 * n) for _ in range(n_layer + 1))
        self.norm_out = nn.GroupNorm(groups, n)
        self.conv_out = nn.Conv2d(n, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z, gamma):
        t = (gamma - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN)
        cond = F.silu(self.dense1(F.silu(self.dense0(timestep_embedding(1000.0 * t, self.n)))))
        parts = [z]
        for e in self.fourier:
            s = z * (2.0**e * math.pi)
            parts += [s.sin(), s.cos()]
        hs = [self.conv_in(torch.cat(parts, dim=1))]
        for b in self.down:
            hs.append(b(hs[-1], cond))
        h = self.mid2(self.mid_attn(self.mid1(hs[-1], cond)), cond)
        for b in self.up:
            h = b(torch.cat([h, hs.pop()], dim=1), cond)
        return self.conv_out(F.silu(self.norm_out(h))) + z


class Vdm(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.forward_net = net
        self.b = nn.Parameter(torch.tensor([GAMMA_MIN]))
        self.w = nn.Parameter(torch.tensor([GAMMA_MAX - GAMMA_MIN]))

    def gamma(self, t):
        return self.b + self.w.abs() * t

    def loss_bpd(self, pixels):
        """The continuous-time VLB in bits per dimension, averaged over the batch."""
        b = pixels.shape[0]
        d = pixels[0].numel()
        f = 2.0 * (pixels + 0.5) / 256.0 - 1.0
        g0, g1 = self.gamma(torch.zeros(1, device=f.device)), self.gamma(torch.ones(1, device=f.device))
        a1 = torch.sigmoid(-g1)
        prior = 0.5 * (a1 * f**2 - a1 + F.softplus(-g1)).flatten(1).sum(1)
        z0 = torch.sqrt(torch.sigmoid(-g0)) * f + torch.sqrt(torch.sigmoid(g0)) * torch.randn_like(f)
        z = z0 / torch.sqrt(torch.sigmoid(-g0))
        centres = 2.0 * (torch.arange(256, device=f.device) + 0.5) / 256.0 - 1.0
        logits = -0.5 * torch.exp(-g0) * (z[..., None] - centres) ** 2
        logp = torch.log_softmax(logits, dim=-1).gather(-1, pixels.long()[..., None])[..., 0]
        recon = -logp.flatten(1).sum(1)
        t = (torch.rand(1, device=f.device) + torch.arange(b, device=f.device) / b) % 1.0
        g_t = self.gamma(t)
        eps = torch.randn_like(f)
        z_t = torch.sqrt(torch.sigmoid(-g_t))[:, None, None, None] * f + torch.sqrt(torch.sigmoid(g_t))[:, None, None, None] * eps
        eps_hat = self.forward_net(z_t, g_t)
        diffusion = 0.5 * self.w.abs() * ((eps - eps_hat) ** 2).flatten(1).sum(1)
        return ((prior + recon + diffusion) / (d * math.log(2.0))).mean()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    channels, size, n, n_layer, groups, dropout, fourier, batch = SIZES[a.size]
    batch = a.batch_size or batch
    dev = torch.device(a.device)
    model = Vdm(ScoreNet(channels, n, n_layer, groups, dropout, fourier)).to(dev)
    params = sum(q.numel() for q in model.parameters())
    net = torch.compile(model.net) if a.compile else model.net
    model.forward_net = net
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    pixels = torch.randint(0, 256, (batch, channels, size, size), device=dev).float()
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss_bpd(pixels)
        loss.backward()
        opt.step()
        return loss.item()

    train_s = timed_steps(train_step, a.steps)

    model.eval()
    z = torch.randn(batch, channels, size, size, device=dev)
    g = torch.full((batch,), -3.0, device=dev)
    with torch.no_grad():
        for _ in range(2):
            net(z, g)
        sync()
        start = time.perf_counter()
        for _ in range(a.sample_steps):
            z = 0.99 * z + 0.01 * net(z, g)
        sync()
        sample_s = time.perf_counter() - start

    report("pytorch-compile" if a.compile else "pytorch-eager", a, params, batch, train_s, sample_s)


def timed_steps(step, steps):
    """Seconds of `steps` calls of `step` after two warm-up calls, as `vdm bench` times training."""
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def report(impl, a, params, batch, train_s, sample_s):
    """Prints the figures `vdm bench` prints (one JSON line with --json), and this process's peak
    resident memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {
        "impl": impl,
        "size": a.size,
        "parameters": params,
        "batch": batch,
        "train_images_per_s": a.steps * batch / train_s,
        "sample_ms_per_eval": 1e3 * sample_s / a.sample_steps,
        "peak_rss_bytes": peak,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{impl} size {a.size}: {params} parameters, batch {batch}")
        print(f"training: {result['train_images_per_s']:.1f} images/s")
        print(f"sampling: {result['sample_ms_per_eval']:.1f} ms per network evaluation of {batch} images")
        print(f"peak RSS: {peak / 1e6:.0f} MB")

if __name__ == "__main__":
    main()
