#!/usr/bin/env python3
"""VDM's weighted diffusion losses side by side: trains one run per configuration (each a TOML
holding only what differs from the default run, e.g. `[model.weighting] kind = "sigmoid"`), then
measures each run's test bound (`vdm eval`) and sample quality (`vdm fid`) with every sampler
given, and writes one Markdown table.

    python3 scripts/weightings.py --config NAME=FILE [--config ...] [--reference NAME=RUN_DIR ...]
        --classifier DIR [--vdm target/release/vdm] [--n 500]
        [--sampler ddim:50:time:0,1,2,3 --sampler ancestral:1000:time:0 ...] [--out DIR]

`--reference` adds an already trained run (a DDPM, say) to the table without training it; the
default run itself is the configuration `elbo` when its file holds only `[data]`. Runs that
exist under `--out` are reused, not retrained, and so are measurements. A sampler's seeds (after
the last colon; 0 when left out) are shared by every run, so the FIDs are paired: one seed's FID
moves by tens on these digits, and the table gives the mean over the seeds with each seed's value.
"""
import argparse
import json
import os
import re
import subprocess


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def bound(vdm, run_dir):
    """The test bound `vdm eval` prints: (bpd, standard error)."""
    out = run([vdm, "eval", "--checkpoint", run_dir])
    m = re.search(r"test bpd [^:]*: ([0-9.]+) ± ([0-9.]+)", out)
    if not m:
        raise SystemExit(f"no bound in the output of vdm eval for {run_dir}:\n{out}")
    return float(m.group(1)), float(m.group(2))


def quality(vdm, run_dir, classifier, n, sampler, steps, spacing, seed, out_dir, name):
    path = os.path.join(out_dir, f"{name}-{sampler}-{steps}-{spacing}-seed{seed}.json")
    if not os.path.exists(path):
        run([vdm, "fid", "--checkpoint", run_dir, "--classifier", classifier, "--n", str(n), "--sampler", sampler,
             "--steps", str(steps), "--spacing", spacing, "--seed", seed, "--json", path])
    with open(path) as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="NAME=FILE: a run configuration to train")
    p.add_argument("--reference", action="append", default=[], help="NAME=RUN_DIR: a trained run to measure")
    p.add_argument("--classifier", required=True)
    p.add_argument("--vdm", default="target/release/vdm")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--sampler", action="append", default=[], help="SAMPLER:STEPS:SPACING")
    p.add_argument("--out", default="weightings")
    a = p.parse_args()
    samplers = [(s.split(":") + ["0"])[:4] for s in (a.sampler or ["ddim:50:time:0,1,2,3", "ancestral:1000:time:0"])]
    os.makedirs(a.out, exist_ok=True)

    runs = []
    for spec in a.config:
        name, config = spec.split("=", 1)
        run_dir = os.path.join(a.out, "runs", name)
        if not os.path.exists(run_dir):
            run([a.vdm, "train", "--config", config, "--run", run_dir])
        runs.append((name, run_dir))
    runs += [tuple(spec.split("=", 1)) for spec in a.reference]

    lines = ["| run | test bpd ↓ | sampler | NFE | FID ↓ (mean; per seed) | IS analogue ↑ | confident ↑ |",
             "|---|---|---|---|---|---|---|"]
    for name, run_dir in runs:
        bpd, se = bound(a.vdm, run_dir)
        for k, (sampler, steps, spacing, seeds) in enumerate(samplers):
            reports = [quality(a.vdm, run_dir, a.classifier, a.n, sampler, steps, spacing, seed, a.out, name)
                       for seed in seeds.split(",")]
            mean = lambda key: sum(r["metrics"][key] for r in reports) / len(reports)
            fids = ", ".join(f"{r['metrics']['fid']:.1f}" for r in reports)
            first = f"| {name} | {bpd:.3f} ± {se:.3f} " if k == 0 else "| | "
            lines.append(f"{first}| {sampler} ({spacing}) | {reports[0]['nfe']} | **{mean('fid'):.1f}**"
                         f"{f'; {fids}' if len(reports) > 1 else ''} | {mean('inception_score'):.2f} | "
                         f"{100 * mean('confident_share'):.1f}% |")
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
