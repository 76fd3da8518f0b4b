#!/usr/bin/env python3
"""Reference GEMM timings measured in the same bench run as mixprec's own.

--device cpu:  numpy's matmul (its BLAS: OpenBLAS/MKL SGEMM), float32; and PyTorch's CPU matmul,
               float32 and bfloat16, where torch imports. --libs picks which (default: both).
--device cuda: PyTorch (cuBLAS), float32, float16 and bfloat16, if torch imports.

--sizes n,... times square n x n x n GEMMs; --shapes MxNxK[:nn|nt|tn|tt],... times
M x N x K ones, with a transposed operand stored transposed (a [K, M] for transA, b [N, K] for
transB: `A.T @ B` on the stored arrays), so the library's GEMM gets the transpose flag.

--threads N sets the BLAS / OpenMP / torch thread count before the libraries load (the caller
passes mixprec's: all cores, or MIXPREC_NUM_THREADS). The caller is expected to run this with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset, so OpenBLAS picks its own kernel and cache sizes.

Prints one JSON line:
  {"interpreter", "python", "threads", "references": [
     {"name": "numpy" | "torch", "library", "version", "blas": {...}, "threads",
      "results": [{"size" (squares only), "shape": {"M", "N", "K", "transA", "transB"}, "dtype", "gflops"}]}
     or {"name", "error"} ]}
"blas" names the kernel that ran: OpenBLAS's config string and core name (read from the loaded
library with ctypes), threadpoolctl's view where it imports, torch's build summary lines and CPU
capability. Timing: median of repeated runs after warm-up.
"""
import argparse, ctypes, json, os, platform, re, statistics, sys, time


def bench(fn, sync, min_time=0.3, min_reps=3):
    fn(); sync()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t0)
        if len(times) >= 200: break
    return statistics.median(times)


# --- which BLAS kernel ran ---------------------------------------------------------------------

# OpenBLAS exports openblas_get_config / openblas_get_corename, renamed in some builds: numpy's
# wheels (scipy-openblas) prefix "scipy_" and, for the ILP64 build, suffix "64_".
_PREFIXES = ("", "scipy_")
_SUFFIXES = ("", "64_", "_64")


def _openblas_fn(lib, name):
    for p in _PREFIXES:
        for s in _SUFFIXES:
            f = getattr(lib, p + name + s, None)
            if f is not None:
                return f
    return None


def _loaded_libraries():
    """Shared libraries mapped into this process (Linux: /proc/self/maps), in load order."""
    seen, out = set(), []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5].startswith("/") and ".so" in parts[5] and parts[5] not in seen:
                    seen.add(parts[5]); out.append(parts[5])
    except OSError:
        pass
    return out


def openblas_info(exclude=None):
    """Config string, core name and thread count of each OpenBLAS loaded into this process
    (`exclude`: a regex of paths to skip, e.g. numpy's bundled copy when asking about torch's)."""
    found = []
    libs = [p for p in _loaded_libraries() if re.search(r"openblas|/libblas\.so", p, re.I) and not (exclude and re.search(exclude, p))]
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        cfg, core, nth = _openblas_fn(lib, "openblas_get_config"), _openblas_fn(lib, "openblas_get_corename"), _openblas_fn(lib, "openblas_get_num_threads")
        if cfg is None:
            continue
        # libblas.so.3 / liblapack.so.3 of Debian's OpenBLAS resolve to libopenblas: one entry
        # per library actually holding the code, named by the file whose name says openblas.
        addr = ctypes.cast(cfg, ctypes.c_void_p).value
        cfg.restype = ctypes.c_char_p
        entry = {"path": os.path.realpath(path), "config": cfg().decode(errors="replace").strip()}
        if core is not None:
            core.restype = ctypes.c_char_p
            entry["corename"] = core().decode(errors="replace").strip()
        if nth is not None:
            nth.restype = ctypes.c_int
            entry["threads"] = nth()
        same = next((e for e in found if e["_addr"] == addr), None)
        if same is None:
            entry["_addr"] = addr
            found.append(entry)
        elif "openblas" in os.path.basename(entry["path"]).lower() and "openblas" not in os.path.basename(same["path"]).lower():
            same["path"] = entry["path"]
    for e in found:
        del e["_addr"]
    return found


def threadpoolctl_info():
    try:
        import threadpoolctl
    except ImportError:
        return None
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer", "filepath")
    return [{k: v for k, v in d.items() if k in keep} for d in threadpoolctl.threadpool_info()]


def set_openblas_threads(n):
    for path in (p for p in _loaded_libraries() if re.search(r"openblas|/libblas\.so", p, re.I)):
        try:
            f = _openblas_fn(ctypes.CDLL(path), "openblas_set_num_threads")
        except OSError:
            continue
        if f is not None:
            f.argtypes = [ctypes.c_int]; f(n)


def numpy_blas_info(np):
    info = {}
    try:
        cfg = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else None
        blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
        if blas:
            info["build"] = {k: blas[k] for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception:  # noqa: BLE001 - the build summary is optional
        pass
    ob = openblas_info()
    if ob:
        info["openblas"] = ob
    tp = threadpoolctl_info()
    if tp is not None:
        info["threadpoolctl"] = tp
    # One line: what ran (the loaded OpenBLAS's own words beat the build summary).
    if ob:
        info["summary"] = "; ".join(f"{e['config']} (core {e.get('corename', '?')})" for e in ob)
    elif tp:
        info["summary"] = "; ".join(f"{d.get('internal_api')} {d.get('version')} ({d.get('architecture')})" for d in tp)
    elif info.get("build"):
        b = info["build"]
        info["summary"] = b.get("openblas configuration") or f"{b.get('name', 'BLAS')} {b.get('version', '')}".strip()
    else:
        info["summary"] = "unknown"
    return info


def torch_cpu_info(torch):
    info = {}
    show = torch.__config__.show()
    lines = [l.strip(" -") for l in show.splitlines()]
    info["config"] = [l for l in lines if re.search(r"MKL-DNN|oneDNN|\bMKL\b|OpenMP|CPU capability|LAPACK", l) and not l.startswith("Build settings")]
    m = re.search(r"BLAS_INFO=([^,\s]+)", show)
    if m:
        info["blasInfo"] = m.group(1)
    cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if cap is not None:
        info["cpuCapability"] = cap()
    else:
        m = re.search(r"CPU capability usage:\s*(\S+)", show)
        if m:
            info["cpuCapability"] = m.group(1)
    info["mkldnn"] = bool(torch.backends.mkldnn.is_available())
    # BLAS_INFO=generic: torch calls the system sgemm_ (Debian: libblas.so.3, i.e. OpenBLAS when
    # libopenblas0-* is installed); numpy's wheel-bundled OpenBLAS is not torch's.
    ob = openblas_info(exclude=r"numpy|scipy_openblas")
    if ob:
        info["openblas"] = ob
    tp = threadpoolctl_info()
    if tp is not None:
        info["threadpoolctl"] = tp
    dnn = next((l for l in info["config"] if re.search(r"MKL-DNN|oneDNN", l)), None)
    parts = [f"BLAS_INFO={info.get('blasInfo', '?')}"]
    if ob:
        parts.append("; ".join(f"{e['config']} (core {e.get('corename', '?')})" for e in ob))
    if dnn:
        parts.append(dnn)
    parts.append(f"CPU capability {info.get('cpuCapability', '?')}")
    info["summary"] = ", ".join(parts)
    return info


# --- the GEMMs --------------------------------------------------------------------------------

_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)(?::(nn|nt|tn|tt))?$", re.I)


def parse_shapes(text):
    """--shapes: (M, N, K, transA, transB) per item, repeats dropped."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        m = _SHAPE_RE.match(item)
        if not m or not all(int(d) > 0 for d in m.groups()[:3]):
            raise argparse.ArgumentTypeError(f"'{item}' is not MxNxK[:nn|nt|tn|tt] with positive M, N, K")
        t = (m.group(4) or "nn").lower()
        shape = (int(m.group(1)), int(m.group(2)), int(m.group(3)), t[0] == "t", t[1] == "t")
        if shape not in out:
            out.append(shape)
    return out


def gemms(sizes, shapes):
    """What to time: (size or None, (M, N, K, transA, transB)), the squares first."""
    return [(n, (n, n, n, False, False)) for n in sizes] + [(None, s) for s in shapes]


def result(size, shape, dtype, t):
    M, N, K, ta, tb = shape
    r = {"size": size} if size is not None else {}
    r.update({"shape": {"M": M, "N": N, "K": K, "transA": ta, "transB": tb}, "dtype": dtype, "gflops": 2 * M * N * K / t / 1e9})
    return r


def operands(shape, make):
    """make(rows, cols) -> array: a and b stored as BLAS sees them (a [K, M] for transA, b [N, K]
    for transB), returned as op(a), op(b): the transposed ones as transposed views."""
    M, N, K, ta, tb = shape
    a = make(K, M) if ta else make(M, K)
    b = make(N, K) if tb else make(K, N)
    return (a.T if ta else a), (b.T if tb else b)


# --- the references ----------------------------------------------------------------------------

def numpy_ref(sizes, shapes, threads):
    try:
        import numpy as np
    except ImportError as e:
        return {"name": "numpy", "error": f"numpy not importable: {e}"}
    set_openblas_threads(threads)
    rng = np.random.default_rng(0)
    results = []
    for size, shape in gemms(sizes, shapes):
        A, B = operands(shape, lambda r, c: rng.standard_normal((r, c), dtype=np.float32))
        t = bench(lambda: A @ B, lambda: None)
        results.append(result(size, shape, "float32", t))
    blas = numpy_blas_info(np)
    ob = blas.get("openblas") or []
    return {"name": "numpy", "library": f"numpy {np.__version__}", "version": np.__version__, "blas": blas,
            "threads": ob[0].get("threads", threads) if ob else threads, "results": results}


def torch_cpu_ref(sizes, shapes, threads):
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no reference"
        return {"name": "torch", "error": f"torch not importable: {e}"}
    torch.set_num_threads(threads)
    set_openblas_threads(threads)
    torch.manual_seed(0)
    results = []
    for size, shape in gemms(sizes, shapes):
        for dt, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
            A, B = operands(shape, lambda r, c: torch.randn(r, c, dtype=dt))
            with torch.no_grad():
                t = bench(lambda: A @ B, lambda: None)
            results.append(result(size, shape, name, t))
    return {"name": "torch", "library": f"torch {torch.__version__}", "version": torch.__version__, "blas": torch_cpu_info(torch),
            "threads": torch.get_num_threads(), "results": results}


def torch_cuda_ref(sizes, shapes):
    try:
        import torch
        assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    except Exception as e:  # noqa: BLE001 - any import/runtime failure means "no reference"
        return {"name": "torch", "error": f"torch with CUDA not usable: {e}"}
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    for size, shape in gemms(sizes, shapes):
        for dt, name in ((torch.float32, "float32"), (torch.float16, "float16"), (torch.bfloat16, "bfloat16")):
            A, B = operands(shape, lambda r, c: torch.randn(r, c, device="cuda", dtype=dt))
            t = bench(lambda: A @ B, torch.cuda.synchronize)
            results.append(result(size, shape, name, t))
    return {"name": "torch", "library": f"torch {torch.__version__} (cuBLAS)", "version": torch.__version__,
            "blas": {"summary": f"cuBLAS {torch.version.cuda or ''}".strip(), "device": torch.cuda.get_device_name()}, "results": results}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], required=True)
    ap.add_argument("--sizes", default="256,512,1024,2048", help="square GEMMs, n for n x n x n ('' for none)")
    ap.add_argument("--shapes", type=parse_shapes, default=[], help="MxNxK[:nn|nt|tn|tt] GEMMs (tn: a stored [K, M]; nt: b stored [N, K]), comma-separated (mixprec bench gemm expands its mlp preset)")
    ap.add_argument("--libs", default="numpy,torch", help="cpu: which references, comma-separated (numpy, torch)")
    ap.add_argument("--threads", type=int, default=0, help="threads for the BLAS / torch (default: os.cpu_count())")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    # Before numpy / torch load: their thread pools size themselves from these.
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(threads)
    refs = []
    if a.device == "cpu":
        libs = [s.strip() for s in a.libs.split(",") if s.strip()]
        if "numpy" in libs:
            refs.append(numpy_ref(sizes, a.shapes, threads))
        if "torch" in libs:
            refs.append(torch_cpu_ref(sizes, a.shapes, threads))
    else:
        refs.append(torch_cuda_ref(sizes, a.shapes))
    print(json.dumps({"interpreter": sys.executable, "python": platform.python_version(), "threads": threads,
                      "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
                      "references": refs}))


if __name__ == "__main__":
    sys.exit(main())
