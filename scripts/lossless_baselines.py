#!/usr/bin/env python3
"""The usual lossless image formats on the images `vdm compress` codes, in bits per dimension.

Reads images in CIFAR-10's binary batch format (one label byte, then 3x32x32 bytes, planes R, G,
B) and measures every byte of:

- PNG: each image on its own, zlib level 9 (this script's encoder, no filters tried), and
  `optipng -o7` when it is installed;
- WebP lossless: `cwebp -lossless -z 9` (Debian package `webp`);
- JPEG-XL lossless: `cjxl -d 0 -e 9` (Debian package `libjxl-tools`);

each both per image (the sum of the files) and on one mosaic of all the images, a near-square
grid (28 x 28 tiles for 761 images; WebP takes at most 16383 pixels a side), the last row padded
with black tiles. Rates are bits per value of the images themselves (the padding is counted in
the files, not in the values). Prints a Markdown table (and JSON with --json).

    python3 scripts/lossless_baselines.py ../shared/data/cifar10-subset/test_batch.bin
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import zlib


def read_cifar(path, limit=None):
    record = 1 + 3 * 32 * 32
    data = open(path, "rb").read()
    if len(data) % record:
        raise SystemExit(f"{path}: {len(data)} bytes is not a whole number of {record}-byte records")
    images = [data[i * record + 1 : (i + 1) * record] for i in range(len(data) // record)]
    return images[:limit] if limit else images


def png_bytes(rgb_rows, width, height):
    """An 8-bit RGB PNG of `rgb_rows` (height rows of width*3 bytes), filter 0, zlib level 9."""
    raw = b"".join(b"\x00" + row for row in rgb_rows)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def rows(image):
    """Interleaved RGB rows of a planar CIFAR image."""
    r, g, b = image[:1024], image[1024:2048], image[2048:]
    return [bytes(v for x in range(32) for v in (r[y * 32 + x], g[y * 32 + x], b[y * 32 + x])) for y in range(32)]


def size_of(command, src, dst):
    subprocess.run(command(src, dst), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.getsize(dst)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batch", help="a CIFAR-10 binary batch file")
    parser.add_argument("--limit", type=int, help="the first N images only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    images = read_cifar(args.batch, args.limit)
    dims = 3072 * len(images)
    tools = {
        "WebP lossless (cwebp -lossless -z 9)": ("cwebp", ".webp", lambda s, d: ["cwebp", "-quiet", "-lossless", "-z", "9", s, "-o", d]),
        "JPEG-XL lossless (cjxl -d 0 -e 9)": ("cjxl", ".jxl", lambda s, d: ["cjxl", "-d", "0", "-e", "9", "--quiet", s, d]),
        "PNG (optipng -o7)": ("optipng", ".png", lambda s, d: ["optipng", "-quiet", "-o7", s, "-out", d]),
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        singles = []
        for i, image in enumerate(images):
            path = os.path.join(tmp, f"{i:05}.png")
            with open(path, "wb") as f:
                f.write(png_bytes(rows(image), 32, 32))
            singles.append(path)
        mosaic = os.path.join(tmp, "mosaic.png")
        columns = math.ceil(math.sqrt(len(images)))
        tiles = [rows(image) for image in images]
        tiles += [[bytes(96)] * 32] * (-len(tiles) % columns)
        grid = [b"".join(tile[y] for tile in tiles[r : r + columns]) for r in range(0, len(tiles), columns) for y in range(32)]
        with open(mosaic, "wb") as f:
            f.write(png_bytes(grid, 32 * columns, len(grid)))
        results.append(("PNG (zlib -9, filter 0)", sum(os.path.getsize(p) for p in singles), os.path.getsize(mosaic)))
        for name, (tool, ext, command) in tools.items():
            if shutil.which(tool) is None:
                print(f"({tool} is not installed: {name} left out)")
                continue
            per_image = sum(size_of(command, p, p[:-4] + "-out" + ext) for p in singles)
            whole = size_of(command, mosaic, mosaic[:-4] + "-out" + ext)
            results.append((name, per_image, whole))
    raw = 8 * dims
    if args.json:
        print(json.dumps({"images": len(images), "dims": dims, "formats": [
            {"format": n, "per_image_bytes": a, "mosaic_bytes": b, "per_image_bpd": 8 * a / dims, "mosaic_bpd": 8 * b / dims}
            for n, a, b in results]}, indent=1))
        return
    print(f"{len(images)} images, {dims} values (raw: {raw / dims:.3f} bpd)\n")
    print("| format | per image, bpd | one mosaic, bpd |")
    print("|---|---|---|")
    for name, per_image, whole in results:
        print(f"| {name} | {8 * per_image / dims:.3f} | {8 * whole / dims:.3f} |")


if __name__ == "__main__":
    main()
