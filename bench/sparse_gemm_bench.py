"""Does unstructured weight sparsity turn into time on this CPU? (issue #7, SViTE)

Times y = x @ W^T for a DeiT-S MLP fc1 (x [197*B, 384], W [1536, 384]) with W dense and
with W at several unstructured sparsities through the sparse kernels Debian's
PyTorch 1.13 offers on CPU (COO torch.sparse.mm and CSR matmul), single-threaded like
the server. LibTorch is the same ATen build, so these are the kernels vitserve could
call. Prints one Markdown table.

Usage: /usr/bin/python3 bench/sparse_gemm_bench.py [--threads 1] [--batch 1] [--seconds 1]
"""
import argparse
import time

import torch


def timed(fn, seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(197 * args.batch, 384, generator=g)
    w = torch.randn(1536, 384, generator=g)
    xt = x.t().contiguous()
    print(f"| sparsity | dense ms | COO sparse.mm ms | CSR matmul ms | best sparse / dense |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        for s in (0.0, 0.5, 0.7, 0.9, 0.95):
            ws = w * (torch.rand(w.shape, generator=g) >= s)
            dense = timed(lambda: torch.nn.functional.linear(x, ws), args.seconds)
            coo = ws.to_sparse()
            t_coo = timed(lambda: torch.sparse.mm(coo, xt), args.seconds)
            csr = ws.to_sparse_csr()
            t_csr = timed(lambda: csr.matmul(xt), args.seconds)
            best = min(t_coo, t_csr)
            print(f"| {s:.2f} | {dense * 1e3:.3f} | {t_coo * 1e3:.3f} | {t_csr * 1e3:.3f} | "
                  f"{best / dense:.2f}x |")


if __name__ == "__main__":
    main()
