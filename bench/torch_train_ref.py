#!/usr/bin/env python3
"""PyTorch reference for the MLP training step, run by `mixprec bench train` in the same run.

The same model (Linear + ReLU layers, cross entropy), batch and optimizer (AdamW) as mixprec's:
CUDA: autocast(fp16) + GradScaler + AdamW(fused=True) ('torch-amp') — what a PyTorch AMP user
      would write — and plain fp32 ('torch-fp32').
CPU:  plain fp32 ('torch-fp32') and autocast(bfloat16) with no GradScaler ('torch-autocast-bf16'),
      what PyTorch's CPU AMP recipe is; --threads sets torch's (and its BLAS's) thread count, and
      where torch's GEMMs go to OpenBLAS, --blas-threads best times OpenBLAS with --threads and
      with 1 thread and keeps the faster (reported as blasThreads).
Prints one JSON line {"library", "version", "interpreter", "threads", "blas", "results": [{"mode", "msPerStep"}]}
or {"error": ...} when torch is missing. "blas" names the kernels (see blas_ref.py).
"""
import argparse, json, os, platform, statistics, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], required=True)
    ap.add_argument("--widths", default="784,1024,1024,10")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="cpu: torch / BLAS threads (default: os.cpu_count())")
    ap.add_argument("--blas-threads", default="best", help="cpu: OpenBLAS threads inside torch: a number, or 'best' "
                    "(default): --threads and 1 both timed, the faster kept, since torch's OpenMP threads and "
                    "OpenBLAS's can oversubscribe the cores")
    ap.add_argument("--modes", default="", help="only these modes, comma-separated (default: all for the device)")
    a = ap.parse_args()
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    if a.device == "cpu":
        # Before torch loads: OpenMP and OpenBLAS size their pools from these.
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(threads)
    try:
        import torch
        if a.device == "cuda":
            assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    except Exception as e:  # noqa: BLE001 - any failure means "no reference"
        print(json.dumps({"error": f"torch not usable: {e}", "interpreter": sys.executable})); return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.dont_write_bytecode = True  # no __pycache__ beside the installed package's scripts
    import blas_ref  # the same BLAS / kernel report as the GEMM reference
    if a.device == "cpu":
        torch.set_num_threads(threads)
        blas_ref.set_openblas_threads(threads)
        blas = blas_ref.torch_cpu_info(torch)
    else:
        blas = {"summary": f"cuBLAS {torch.version.cuda or ''}".strip(), "device": torch.cuda.get_device_name()}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    widths = [int(w) for w in a.widths.split(",")]
    dev = torch.device(a.device)
    x = torch.randn(a.batch, widths[0], device=dev)
    y = torch.randint(0, widths[-1], (a.batch,), device=dev)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    all_modes = ["torch-fp32", "torch-amp"] if a.device == "cuda" else ["torch-fp32", "torch-autocast-bf16"]
    modes = [m for m in (a.modes.split(",") if a.modes else all_modes) if m in all_modes]

    def model():
        layers = []
        for i in range(len(widths) - 1):
            layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers).to(dev)

    def timed(step, min_time=1.0):
        for _ in range(3):
            step()
        sync()
        times, t_start = [], time.perf_counter()
        while len(times) < 5 or time.perf_counter() - t_start < min_time:
            t0 = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t0)
            if len(times) >= 500: break
        return statistics.median(times) * 1e3

    lossf = torch.nn.CrossEntropyLoss()

    def plain_step(m, opt):
        def step():
            opt.zero_grad(set_to_none=True)
            lossf(m(x), y).backward()
            opt.step()
        return step

    def autocast_step(m, opt, dtype):
        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(a.device, dtype=dtype):
                loss = lossf(m(x), y)
            loss.backward()
            opt.step()
        return step

    def scaled_step(m, opt):
        scaler = torch.amp.GradScaler("cuda") if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = lossf(m(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return step

    blas_threads = [None]
    if a.device == "cpu" and blas.get("openblas"):
        blas_threads = [threads] + ([1] if threads > 1 else []) if a.blas_threads == "best" else [int(a.blas_threads)]
    results = []
    for mode in modes:
        m = model()
        opt = torch.optim.AdamW(m.parameters(), fused=True) if a.device == "cuda" else torch.optim.AdamW(m.parameters())
        if mode == "torch-fp32":
            step = plain_step(m, opt)
        elif mode == "torch-amp":
            step = scaled_step(m, opt)
        else:
            step = autocast_step(m, opt, torch.bfloat16)
        tried = {}
        for bt in blas_threads:
            if bt is not None:
                blas_ref.set_openblas_threads(bt)
            tried[bt] = timed(step)
        best = min(tried, key=tried.get)
        r = {"mode": mode, "msPerStep": tried[best]}
        if best is not None:
            r.update(blasThreads=best, msPerStepByBlasThreads={str(k): v for k, v in tried.items()})
        results.append(r)
        del m, opt
    print(json.dumps({"library": f"torch {torch.__version__}", "version": torch.__version__, "interpreter": sys.executable,
                      "python": platform.python_version(), "threads": torch.get_num_threads(), "blas": blas,
                      "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY")}, "results": results}))


if __name__ == "__main__":
    sys.exit(main())
