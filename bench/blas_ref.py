#!/usr/bin/env python3
"""Reference GEMM timings measured in the same bench run as mixprec's own.

--device cpu:  numpy's matmul (OpenBLAS/MKL SGEMM), float32.
--device cuda: PyTorch (cuBLAS), float32 and float16 (FP32 accumulate), if torch imports.
Prints one JSON object: {"library": ..., "results": [{"size", "dtype", "gflops"}]} or
{"error": "..."} when the library is missing. Timing: median of repeated runs after warm-up.
"""
import argparse, json, statistics, sys, time

def bench(fn, sync, min_time=0.3, min_reps=3):
    fn(); sync()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t0)
        if len(times) >= 200: break
    return statistics.median(times)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], required=True)
    ap.add_argument("--sizes", default="256,512,1024,2048")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    out = []
    if a.device == "cpu":
        try:
            import numpy as np
        except ImportError as e:
            print(json.dumps({"error": f"numpy not importable: {e}"})); return
        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
        lib = f"numpy {np.__version__} ({blas.get('name', 'BLAS')} {blas.get('version', '')})".strip()
        rng = np.random.default_rng(0)
        for n in sizes:
            A = rng.standard_normal((n, n), dtype=np.float32); B = rng.standard_normal((n, n), dtype=np.float32)
            t = bench(lambda: A @ B, lambda: None)
            out.append({"size": n, "dtype": "float32", "gflops": 2 * n**3 / t / 1e9})
    else:
        try:
            import torch
            assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
        except Exception as e:  # noqa: BLE001 - any import/runtime failure means "no reference"
            print(json.dumps({"error": f"torch with CUDA not usable: {e}"})); return
        torch.backends.cuda.matmul.allow_tf32 = False
        lib = f"torch {torch.__version__} (cuBLAS)"
        for n in sizes:
            for dt, name in ((torch.float32, "float32"), (torch.float16, "float16"), (torch.bfloat16, "bfloat16")):
                A = torch.randn(n, n, device="cuda", dtype=dt); B = torch.randn(n, n, device="cuda", dtype=dt)
                t = bench(lambda: A @ B, torch.cuda.synchronize)
                out.append({"size": n, "dtype": name, "gflops": 2 * n**3 / t / 1e9})
    print(json.dumps({"library": lib, "results": out}))

if __name__ == "__main__":
    sys.exit(main())
