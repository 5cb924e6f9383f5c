#!/usr/bin/python3
"""The machine's float32 GEMM peak, measured: an n x n x n sgemm (default 2048) through
oneDNN's dnnl_sgemm (libdnnl.so.2, via ctypes; threads = OMP_NUM_THREADS) and through
numpy (Debian's OpenBLAS; threads = OPENBLAS_NUM_THREADS), best of --reps. Set the thread
environment variables before starting this process (run.sh does). Prints one JSON line:
  {"threads", "n", "onednn_gflops", "openblas_gflops", "peak_gflops"}
"""

import argparse
import ctypes
import json
import os
import time

import numpy as np


def best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    c = np.zeros((n, n), dtype=np.float32)
    flops = 2.0 * n * n * n
    out = {"threads": int(os.environ.get("OMP_NUM_THREADS", "0")), "n": n}
    out["openblas_gflops"] = flops / best_seconds(lambda: np.matmul(a, b, out=c), args.reps) / 1e9
    try:
        dnnl = ctypes.CDLL("libdnnl.so.2")
        ptr = ctypes.POINTER(ctypes.c_float)
        dnnl.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, ctypes.c_int64, ctypes.c_int64,
                                    ctypes.c_int64, ctypes.c_float, ptr, ctypes.c_int64, ptr,
                                    ctypes.c_int64, ctypes.c_float, ptr, ctypes.c_int64]
        pa, pb, pc = (m.ctypes.data_as(ptr) for m in (a, b, c))
        call = lambda: dnnl.dnnl_sgemm(b"N", b"N", n, n, n, 1.0, pa, n, pb, n, 0.0, pc, n)
        out["onednn_gflops"] = flops / best_seconds(call, args.reps) / 1e9
    except OSError:
        out["onednn_gflops"] = None
    out["peak_gflops"] = max(v for v in (out["openblas_gflops"], out["onednn_gflops"]) if v)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
