#!/usr/bin/env python3
"""PyTorch reference for the MLP training step, run by `mixprec bench train` in the same run.

CUDA: autocast(fp16) + GradScaler + AdamW(fused=True) — what a PyTorch AMP user would write —
and plain fp32. CPU: fp32 only. Prints one JSON line {"library", "results": [{"mode", "msPerStep"}]}
or {"error": ...} when torch is missing.
"""
import argparse, json, statistics, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], required=True)
    ap.add_argument("--widths", default="784,1024,1024,10")
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    try:
        import torch
        if a.device == "cuda":
            assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    except Exception as e:  # noqa: BLE001 - any failure means "no reference"
        print(json.dumps({"error": f"torch not usable: {e}"})); return
    torch.backends.cuda.matmul.allow_tf32 = False
    widths = [int(w) for w in a.widths.split(",")]
    dev = torch.device(a.device)
    x = torch.randn(a.batch, widths[0], device=dev)
    y = torch.randint(0, widths[-1], (a.batch,), device=dev)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)

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

    results = []
    m = model()
    opt = torch.optim.AdamW(m.parameters(), fused=(a.device == "cuda"))
    lossf = torch.nn.CrossEntropyLoss()

    def fp32_step():
        opt.zero_grad(set_to_none=True)
        lossf(m(x), y).backward()
        opt.step()
    results.append({"mode": "torch-fp32", "msPerStep": timed(fp32_step)})

    if a.device == "cuda":
        m2 = model()
        opt2 = torch.optim.AdamW(m2.parameters(), fused=True)
        scaler = torch.amp.GradScaler("cuda")

        def amp_step():
            opt2.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = lossf(m2(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt2)
            scaler.update()
        results.append({"mode": "torch-amp", "msPerStep": timed(amp_step)})
    print(json.dumps({"library": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "results": results}))


if __name__ == "__main__":
    sys.exit(main())
