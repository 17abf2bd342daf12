#!/usr/bin/env python3
"""Writes a CIFAR-10-format directory of random images (5 x 10,000 training records and 10,000
test records by default) for measuring the loader: `python3 scripts/synthetic_cifar10.py DIR [N]`.
Labels are uniform in 0..9, pixels uniform bytes."""
import os
import random
import sys

out = sys.argv[1]
per_file = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
os.makedirs(out, exist_ok=True)
random.seed(0)
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(out, name), "wb") as f:
        for _ in range(per_file):
            f.write(bytes([random.randrange(10)]) + os.urandom(3072))
