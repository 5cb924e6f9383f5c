"""Pillow 9.4 Image.resize timings for the sizes of pil_resize_bench (bench/results/pil-resize.md).

Usage: /usr/bin/python3 bench/pil_time.py
"""
import time, numpy as np
from PIL import Image
rng = np.random.default_rng(1)
cases = [(500,375,341,256),(1024,768,341,256),(1920,1080,455,256),(4000,3000,341,256),(640,480,224,224),(200,150,341,256)]
print("| input | output | kernel | median ms | min-max ms |\n|---|---|---|---|---|")
for w,h,ow,oh in cases:
    im = Image.fromarray(rng.integers(0,256,(h,w,3),dtype=np.uint8),"RGB")
    reps = max(1, 3_000_000 // (w*h))
    for name, f in (("Pillow 9.4 bicubic", Image.BICUBIC), ("Pillow 9.4 bilinear", Image.BILINEAR)):
        ts = []
        im.resize((ow,oh), f)
        for r in range(7):
            t0 = time.perf_counter()
            for _ in range(reps): im.resize((ow,oh), f)
            ts.append((time.perf_counter()-t0)/reps*1e3)
        ts.sort()
        print(f"| {w}x{h} | {ow}x{oh} | {name} | {ts[3]:.3f} | {ts[0]:.3f}-{ts[-1]:.3f} |")
