#!/usr/bin/env python3
"""vdm-rs against PyTorch on the same network, side by side: runs `vdm bench --json` and
`scripts/pytorch_reference.py --json` (eager, and with --compile) in alternation, ROUNDS times
each, and prints the medians as a Markdown table with the ratios. The DDPM sizes (`ddpm-small`,
`ddpm-cifar`) are compared with diffusers' UNet2DModel instead (`scripts/diffusers_bench.py`,
eager).

    python3 scripts/bench_vs_pytorch.py [--vdm target/release/vdm] [--rounds 3]
        [--size tiny --batch-size 64 --steps 10 --sample-steps 20] [--threads 2] [--no-compile]
        [--device cpu|cuda]

Run it on an otherwise idle machine; each process is started fresh, so peak resident memory is
the process's own. Needs `pip install torch numpy` (and `diffusers` for the DDPM sizes).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vdm", default="target/release/vdm")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", default="tiny")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()

    common = ["--size", a.size, "--steps", str(a.steps), "--sample-steps", str(a.sample_steps), "--device", a.device]
    if a.batch_size:
        common += ["--batch-size", str(a.batch_size)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    commands = {"vdm-rs": [a.vdm, "bench", "--json"] + common}
    if a.size.startswith("ddpm-"):
        commands["diffusers"] = [sys.executable, os.path.join(HERE, "diffusers_bench.py"), "--threads", str(a.threads), "--json"] + common
    else:
        torch_cmd = [sys.executable, os.path.join(HERE, "pytorch_reference.py"), "--threads", str(a.threads), "--json"] + common
        commands["pytorch-eager"] = torch_cmd
        if not a.no_compile:
            commands["pytorch-compile"] = torch_cmd + ["--compile"]

    results = {name: [] for name in commands}
    for r in range(a.rounds):
        for name, cmd in commands.items():
            results[name].append(run_json(cmd, env))
            print(f"round {r + 1}/{a.rounds} {name}: {results[name][-1]}", file=sys.stderr)

    params = {name: rs[0]["parameters"] for name, rs in results.items()}
    if len(set(params.values())) != 1:
        sys.exit(f"the implementations disagree on the parameter count: {params}")
    batch = results["vdm-rs"][0]["batch"]

    def median(name, key):
        values = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(values) if values else float("nan")

    print(f"size {a.size}, {params['vdm-rs']:,} parameters, batch {batch}, {a.threads} threads, "
          f"device {a.device}, medians of {a.rounds} alternating rounds")
    print()
    print("| implementation | training images/s | sampling ms per evaluation | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name in commands:
        print(f"| {name} | {median(name, 'train_images_per_s'):.1f} | {median(name, 'sample_ms_per_eval'):.1f} "
              f"| {median(name, 'peak_rss_bytes') / 1e6:.0f} |")
    ours_train, ours_sample = median("vdm-rs", "train_images_per_s"), median("vdm-rs", "sample_ms_per_eval")
    for name in commands:
        if name != "vdm-rs":
            print(f"\nvdm-rs / {name}: training throughput ×{ours_train / median(name, 'train_images_per_s'):.2f}, "
                  f"sampling speed ×{median(name, 'sample_ms_per_eval') / ours_sample:.2f} (above 1: vdm-rs faster)")


if __name__ == "__main__":
    main()
