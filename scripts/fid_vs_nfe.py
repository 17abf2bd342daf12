#!/usr/bin/env python3
"""Sample quality against the number of network evaluations (NFE) for the deterministic
samplers: runs `vdm fid` for every run, sampler and NFE, and writes a Markdown table and an SVG
plot of FID against NFE (log scale) per run.

    python3 scripts/fid_vs_nfe.py --run NAME=RUN_DIR [--run ...] --classifier DIR
        [--vdm target/release/vdm] [--n 500] [--nfe 5,10,15,20,50,100] [--spacing time] [--out DIR]

Heun takes two evaluations per step (one fewer on a chain that ends at the data, as a DDPM's
does), so its step count is the one whose NFE comes nearest to the target at or below it; the
table gives the NFE actually used. Every run draws the same noise (seed 0).
"""
import argparse
import json
import math
import os
import subprocess
import tempfile

SAMPLERS = [("DDIM", "ddim"), ("DPM-Solver++ 2M", "dpm-solver-2m"), ("DPM-Solver++ 3M", "dpm-solver-3m"), ("Heun", "heun")]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def fid(vdm, run, classifier, n, sampler, steps, spacing):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fid.json")
        subprocess.run([vdm, "fid", "--checkpoint", run, "--classifier", classifier, "--n", str(n),
                        "--sampler", sampler, "--steps", str(steps), "--spacing", spacing, "--json", path],
                       check=True, capture_output=True, text=True)
        with open(path) as f:
            report = json.load(f)
    return report["nfe"], report["metrics"]["fid"]


def heun_steps(target, ends_at_data):
    """The most steps whose NFE (2 per step, one fewer when the chain ends at the data) is at most target."""
    return max(1, (target + 1) // 2 if ends_at_data else target // 2)


def svg(results, names, path):
    """FID against NFE, one panel per run, both axes logarithmic."""
    width, height, margin = 420, 300, 50
    nfes = [r["nfe"] for r in results]
    lo, hi = min(nfes), max(nfes)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * len(names)}" height="{height + 40}" '
             f'font-family="sans-serif" font-size="11">']
    for k, name in enumerate(names):
        mine = [r for r in results if r["run"] == name]
        fmin, fmax = min(r["fid"] for r in mine) / 1.1, max(r["fid"] for r in mine) * 1.1
        ox = k * width
        x = lambda nfe: ox + margin + (width - 1.5 * margin) * (math.log(nfe) - math.log(lo)) / (math.log(hi) - math.log(lo))
        y = lambda f: height - margin + 10 - (height - 1.5 * margin) * (math.log(f) - math.log(fmin)) / (math.log(fmax) - math.log(fmin))
        parts.append(f'<text x="{ox + width / 2}" y="16" text-anchor="middle" font-size="13">{name}</text>')
        parts.append(f'<line x1="{x(lo)}" y1="{y(fmin)}" x2="{x(hi)}" y2="{y(fmin)}" stroke="black"/>')
        parts.append(f'<line x1="{x(lo)}" y1="{y(fmin)}" x2="{x(lo)}" y2="{y(fmax)}" stroke="black"/>')
        for nfe in [5, 10, 20, 50, 100]:
            if lo <= nfe <= hi:
                parts.append(f'<text x="{x(nfe)}" y="{y(fmin) + 14}" text-anchor="middle">{nfe}</text>')
        for f in [50, 100, 200, 300, 500, 1000, 2000]:
            if fmin <= f <= fmax:
                parts.append(f'<text x="{x(lo) - 6}" y="{y(f) + 4}" text-anchor="end">{f}</text>')
                parts.append(f'<line x1="{x(lo)}" y1="{y(f)}" x2="{x(hi)}" y2="{y(f)}" stroke="#ddd"/>')
        parts.append(f'<text x="{ox + width / 2}" y="{height + 20}" text-anchor="middle">network evaluations per image</text>')
        parts.append(f'<text x="{ox + 12}" y="{height / 2}" transform="rotate(-90 {ox + 12} {height / 2})" text-anchor="middle">FID (classifier features)</text>')
        for (label, sampler), colour in zip(SAMPLERS, COLOURS):
            pts = sorted((r["nfe"], r["fid"]) for r in mine if r["sampler"] == sampler)
            line = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            for a, b in pts:
                parts.append(f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.5" fill="{colour}"/>')
        for i, ((label, _), colour) in enumerate(zip(SAMPLERS, COLOURS)):
            parts.append(f'<text x="{ox + width - 150}" y="{40 + 14 * i}" fill="{colour}">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    import sys
    if len(sys.argv) == 4 and sys.argv[1] == "--plot":
        with open(sys.argv[2]) as f:
            results = json.load(f)
        svg(results, list(dict.fromkeys(r["run"] for r in results)), sys.argv[3])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vdm", default="target/release/vdm")
    p.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR")
    p.add_argument("--classifier", required=True)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--nfe", default="5,10,15,20,50,100")
    p.add_argument("--spacing", default="time", help="time, log-snr or karras (every sampler)")
    p.add_argument("--out", default=".")
    a = p.parse_args()
    runs = [tuple(r.split("=", 1)) for r in a.run]
    targets = [int(v) for v in a.nfe.split(",")]
    results = []
    for name, run in runs:
        with open(os.path.join(run, "config.toml")) as f:
            ends_at_data = 'family = "ddpm"' in f.read()  # a DDPM's chain ends at the data, a VDM's at z_0
        for _, sampler in SAMPLERS:
            for target in targets:
                steps = heun_steps(target, ends_at_data) if sampler == "heun" else target
                nfe, value = fid(a.vdm, run, a.classifier, a.n, sampler, steps, a.spacing)
                results.append({"run": name, "sampler": sampler, "target": target, "steps": steps, "nfe": nfe, "fid": value})
                print(f"{name} {sampler} steps {steps} NFE {nfe}: FID {value:.1f}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"fid_vs_nfe-{a.spacing}.json"), "w") as f:
        json.dump(results, f, indent=1)
    svg(results, [name for name, _ in runs], os.path.join(a.out, f"fid_vs_nfe-{a.spacing}.svg"))
    for name, _ in runs:
        print(f"\n{name}, {a.spacing} spacing: FID ({a.n} samples) at NFE " + ", ".join(map(str, targets)) + "\n")
        print("| sampler | " + " | ".join(str(t) for t in targets) + " |")
        print("|---|" + "---|" * len(targets))
        for label, sampler in SAMPLERS:
            cells = []
            for t in targets:
                r = next(r for r in results if r["run"] == name and r["sampler"] == sampler and r["target"] == t)
                cells.append(f"{r['fid']:.1f}" + ("" if r["nfe"] == t else f" ({r['nfe']})"))
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
