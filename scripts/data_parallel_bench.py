#!/usr/bin/env python3
"""Step time of `vdm train` against the number of data-parallel replicas, on this machine.

Runs the same training (a config, a number of steps) on one device, on replicas in threads
(`--devices cpu,cpu`, ...) and on processes on loopback (`--nodes 2` through `vdm orchestrator`),
alternating the layouts round by round, and prints each one's median time per step (wall time of
the whole command over the steps: start-up and the final evaluation included, the same for all)
and its ratio to one device.

    python3 scripts/data_parallel_bench.py --vdm target/release/vdm --steps 300 --rounds 3 \
        [--config my.toml] [--layouts one,cpu2,cpu4,proc2]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(vdm, config, run, steps):
    args = [vdm, "train", "--run", run, "--steps", str(steps)]
    return args + (["--config", config] if config else [])


def timed(layout, vdm, config, steps, work):
    """Seconds for one training of `steps` steps laid out as `layout`."""
    run = os.path.join(work, layout)
    shutil.rmtree(run, ignore_errors=True)
    base = train_args(vdm, config, run, steps)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    start = time.perf_counter()
    if layout == "one":
        subprocess.run(base, **quiet)
    elif layout.startswith("cpu"):
        subprocess.run(base + ["--devices", ",".join(["cpu"] * int(layout[3:]))], **quiet)
    elif layout.startswith("proc"):
        count = int(layout[4:])
        port = free_port()
        server = subprocess.Popen([vdm, "orchestrator", "--port", str(port)], stdout=subprocess.DEVNULL)
        try:
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                time.sleep(0.02)
            start = time.perf_counter()
            nodes = []
            for rank in range(count):
                node = ["--nodes", str(count), "--node-rank", str(rank), "--orchestrator",
                        f"ws://127.0.0.1:{port}", "--node-address", f"ws://127.0.0.1:{free_port()}"]
                nodes.append(subprocess.Popen(base + node, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for node in nodes:
                _, err = node.communicate()
                if node.returncode != 0:
                    raise RuntimeError(f"{layout}: a process failed:\n{err.decode()}")
        finally:
            server.kill()
            server.wait()
    else:
        raise ValueError(f"unknown layout {layout}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vdm", default="target/release/vdm")
    parser.add_argument("--config", help="run configuration (default: the default digits run)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layouts", default="one,cpu2,proc2")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    times = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for layout in layouts:
                seconds = timed(layout, args.vdm, args.config, args.steps, work)
                times[layout].append(seconds / args.steps)
                print(f"round {round_ + 1}: {layout:>6} {1e3 * seconds / args.steps:8.2f} ms/step", flush=True)
    one = statistics.median(times[layouts[0]])
    print(f"\nmedian ms per step over {args.rounds} rounds of {args.steps} steps (ratio to {layouts[0]}):")
    for layout in layouts:
        median = statistics.median(times[layout])
        print(f"{layout:>6} {1e3 * median:8.2f} ms/step  {median / one:5.2f}x")


if __name__ == "__main__":
    main()
