#!/usr/bin/env python3
"""Writes the first N Fashion-MNIST test images as 8-bit grayscale PNGs (no PIL needed).

Usage: /usr/bin/python3 docs/examples/extract.py [N] [OUT_DIR]
Source: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist/).
"""
import gzip
import os
import struct
import sys
import zlib

LABELS = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
          "sneaker", "bag", "ankle_boot"]
ROOT = "/usr/share/datasets/fashion-mnist"


def png(width, height, rows):
    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + r for r in rows)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(__file__))
    with gzip.open(os.path.join(ROOT, "t10k-images-idx3-ubyte.gz")) as f:
        magic, count, h, w = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, "not an IDX image file"
        images = f.read(n * h * w)
    with gzip.open(os.path.join(ROOT, "t10k-labels-idx1-ubyte.gz")) as f:
        magic, _ = struct.unpack(">II", f.read(8))
        assert magic == 2049, "not an IDX label file"
        labels = f.read(n)
    for i in range(n):
        img = images[i * h * w:(i + 1) * h * w]
        rows = [img[r * w:(r + 1) * w] for r in range(h)]
        name = os.path.join(out, f"test{i:04d}_{LABELS[labels[i]]}.png")
        with open(name, "wb") as f:
            f.write(png(w, h, rows))
        print(name)


if __name__ == "__main__":
    main()
