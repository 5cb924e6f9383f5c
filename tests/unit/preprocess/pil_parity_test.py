"""vitserve's Pillow-exact resize and image preprocessing against Debian's python3-pil.

Part 1 (resize): random 8-bit images (noise over smooth fields: the hardest case for
rounding), many sizes and aspect ratios, shrinking and enlarging on each axis, RGB and
grayscale, every PIL convolution filter; vitserve's PilResize (through pil_parity_tool)
must give at most 1 level of difference per pixel (the issue's bound) and none at all for
bilinear, bicubic and box (no libm calls in their weights; lanczos / hamming use sin/cos).
The test prints how many samples differ.

Part 2 (pipeline): the same kind of images as PNG through vitserve's Preprocessor, against
the Python pipelines it claims to reproduce: timm/torchvision (Resize(shorter side) with
PIL, CenterCrop with round-half-even offsets, ToTensor, Normalize) and Hugging Face's
ViT/DeiT image processors (PIL resize to {height, width}, center_crop with floor offsets,
float64 rescale cast to float32, normalize). Where the 8-bit crops agree the normalised
tensors must be identical (bit for bit).

Usage: pil_parity_test.py --tool PATH [--cases N] [--seed S]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

FILTERS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_image(rng: np.random.Generator, w: int, h: int, c: int) -> np.ndarray:
    """Smooth field + noise + a few hard edges, uint8 [h, w, c]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, c))
    for ch in range(c):
        fx, fy, ph = rng.uniform(0.005, 0.2), rng.uniform(0.005, 0.2), rng.uniform(0, 6.3)
        img[..., ch] = 128 + 100 * np.sin(xx * fx + yy * fy + ph)
    img += rng.normal(0, rng.uniform(0, 60), size=img.shape)
    if w > 4 and h > 4:  # a saturated rectangle: clipping at 0 and 255 in the filters
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.choice([0, 255])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def pil_of(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a, "L" if a.shape[2] == 1 else "RGB")


def check_resize(tool: str, tmp: str, rng: np.random.Generator, cases: int) -> int:
    worst, differing, total, failures = 0, 0, 0, 0
    for i in range(cases):
        w, h = (int(v) for v in rng.integers(1, 700, size=2))
        if i % 4 == 0:  # extreme aspect ratios
            w, h = int(rng.integers(1, 8)), int(rng.integers(200, 900))
        ow, oh = (int(v) for v in rng.integers(1, 500, size=2))
        c = 1 if i % 3 == 0 else 3
        name = list(FILTERS)[i % len(FILTERS)] if i % 2 else ("bicubic", "bilinear")[i % 4 // 2]
        src = random_image(rng, w, h, c)
        want = np.asarray(pil_of(src).resize((ow, oh), FILTERS[name]))
        want = want.reshape(oh, ow, c)
        inp, outp = os.path.join(tmp, "in.raw"), os.path.join(tmp, "out.raw")
        src.tofile(inp)
        subprocess.run([tool, "resize", inp, str(w), str(h), str(c), str(ow), str(oh), name, outp],
                       check=True)
        got = np.fromfile(outp, dtype=np.uint8).reshape(oh, ow, c)
        diff = np.abs(got.astype(int) - want.astype(int))
        worst = max(worst, int(diff.max()))
        differing += int((diff > 0).sum())
        total += diff.size
        # The bound is 1 level; the filters without libm calls must be exact.
        if diff.max() > 1 or (diff.max() > 0 and name in ("bilinear", "bicubic", "box")):
            failures += 1
            print(f"FAIL resize {w}x{h}x{c} -> {ow}x{oh} {name}: max diff {diff.max()}")
    print(f"resize: {cases} cases, {total} samples, {differing} differ, max diff {worst}")
    return failures


def torchvision_pipeline(img: Image.Image, resize: int, crop: int, resample) -> np.ndarray:
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != resize:
        new_short, new_long = resize, int(resize * long / short)
        img = img.resize((new_short, new_long) if w <= h else (new_long, new_short), resample)
    w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def hf_pipeline(img: Image.Image, height: int, width: int, crop: int, resample) -> np.ndarray:
    img = img.resize((width, height), resample)
    top, left = (height - crop) // 2, (width - crop) // 2
    return np.asarray(img)[top:top + crop, left:left + crop]


def normalise(crop8: np.ndarray, hf: bool, channels: int) -> np.ndarray:
    a = crop8.reshape(crop8.shape[0], crop8.shape[1], channels)
    if hf:  # transformers rescale(): float64 product, cast to float32
        x = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
    else:  # torchvision ToTensor: float32 division
        x = a.astype(np.float32) / np.float32(255)
    mean = np.array(MEAN[:channels], dtype=np.float32)
    std = np.array(STD[:channels], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1).copy()


def check_pipeline(tool: str, tmp: str, rng: np.random.Generator, cases: int) -> int:
    failures = 0
    for i in range(cases):
        c = 1 if i % 4 == 3 else 3
        w, h = (int(v) for v in rng.integers(40, 600, size=2))
        name = ("bicubic", "bilinear")[i % 2]
        src = pil_of(random_image(rng, w, h, c))
        path = os.path.join(tmp, "in.png")
        src.save(path)
        size = int(rng.choice([16, 32, 48, 224]))
        hf = i % 3 == 2
        args = [f"image_size={size}", f"interpolation={name}", f"gray={int(c == 1)}",
                "mean=" + ",".join(map(str, MEAN[:c])), "std=" + ",".join(map(str, STD[:c]))]
        if hf:
            rh, rw = (int(size + v) for v in rng.integers(0, 60, size=2))
            args += [f"resize_height={rh}", f"resize_width={rw}", "crop=center_floor"]
            want8 = hf_pipeline(src, rh, rw, size, FILTERS[name])
        else:
            resize = size + int(rng.integers(0, 40))
            args += [f"resize={resize}"]
            want8 = torchvision_pipeline(src, resize, size, FILTERS[name])
        want = normalise(want8, hf, c)
        out = os.path.join(tmp, "out.f32")
        subprocess.run([tool, "preprocess", path, out] + args, check=True)
        got = np.fromfile(out, dtype=np.float32).reshape(want.shape)
        if not np.array_equal(got, want):
            failures += 1
            print(f"FAIL pipeline {'hf' if hf else 'torchvision'} {w}x{h}x{c} {args}: "
                  f"max diff {np.abs(got - want).max()}")
    print(f"pipeline: {cases} cases, {failures} not identical")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--cases", type=int, default=160)
    ap.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        failures = check_resize(args.tool, tmp, rng, args.cases)
        failures += check_pipeline(args.tool, tmp, rng, args.cases // 2)
    print("OK" if failures == 0 else f"{failures} failures")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
