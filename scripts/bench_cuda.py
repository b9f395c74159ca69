"""Benchmarks the CUDA backend (Model(..., device="cuda")) on random RWKV-7 models of the released shapes.

Uses scripts/bench.py's random models (vocabulary 65536, real LoRA ranks) and measures, per size and weight type:
decode (median ms per single-token call after a 16-token prompt, the state uploaded and written back each call,
as the API does), prefill (tokens/s of one 512-token call), and the decode bound: the bytes a token reads (every
tensor but the embedding, of which one row) over the GPU's device-to-device copy bandwidth (bytes read plus
written per second, measured here with PyTorch when it is installed).

Usage:
    PYTHONPATH=src RWKVCHAT_LIB=<cuda build>/librwkvc.so python scripts/bench_cuda.py \\
        [--sizes 1.5b,7b] [--types f16,q8_0,q4_0] [--cache /tmp/rwkvchat-bench] [--deadline 400] [--json out.json]

Items are measured in order and skipped once --deadline seconds have passed, so a limited session still
reports what it finished. --device cpu runs the same measurements on the CPU (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("rwkv_bench", REPO / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["rwkv_bench"] = bench
_spec.loader.exec_module(bench)
bench.SIZES.setdefault("7b", (32, 4096))
# The width of 7B with 4 of its 32 blocks: a per-block cost at 7B's shapes for a fraction of the file-making time.
bench.SIZES.setdefault("7b-l4", (4, 4096))


def ensure_model(cache: Path, size: str, ty: str) -> Path:
    """As bench.ensure_model, but Q4_0 is made "pure" (the head in Q4_0 too): llama-quantize's default puts a
    1.5B head in Q6_K, which has no CUDA kernel yet."""
    if ty != "q4_0":
        return bench.ensure_model(cache, size, ty)
    path = cache / f"rwkv7-{size}-q4_0-pure.gguf"
    if not path.exists():
        from rwkvchat.quantize import quantize_gguf

        quantize_gguf(bench.ensure_model(cache, size, "f16"), path, "q4_0", pure=True)
    return path


def state_copy_ms(n_floats: int) -> float | None:
    """Milliseconds to upload and download a pageable state of n_floats (what each API call does)."""
    try:
        import numpy as np
        import torch
    except ImportError:
        return None
    host = np.ones(n_floats, np.float32)
    dev = torch.empty(n_floats, dtype=torch.float32, device="cuda")
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        dev.copy_(torch.from_numpy(host))
        torch.cuda.synchronize()
        host[:] = dev.cpu().numpy()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def gpu_bandwidth() -> tuple[float | None, str]:
    """Device-to-device copy bandwidth in bytes/s (read + written), and the GPU's name."""
    try:
        import torch
    except ImportError:
        return None, "unknown GPU (no torch)"
    if not torch.cuda.is_available():
        return None, "no GPU"
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    name = torch.cuda.get_device_name(0)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / best, name


def decode_only(path: Path, device: str) -> float:
    """Median ms of single-token calls in a fresh context (made after the environment is set)."""
    from rwkvchat.model import Model

    with Model(path, device=device) as m:
        s = m.new_state()
        m.forward(bench._tokens(16, 1), s)
        times = []
        for tok in bench._tokens(32, 2):
            t1 = time.perf_counter()
            m.forward([tok], s)
            times.append(time.perf_counter() - t1)
    return statistics.median(times) * 1e3


def measure(path: Path, device: str) -> dict[str, Any]:
    from rwkvchat.model import Model

    t0 = time.perf_counter()
    m = Model(path, threads=0, device=device)
    load_s = time.perf_counter() - t0
    s = m.new_state()
    m.forward(bench._tokens(16, 1), s)
    times = []
    for tok in bench._tokens(64, 2):
        t1 = time.perf_counter()
        m.forward([tok], s)
        times.append(time.perf_counter() - t1)
    long = bench._tokens(512, 3)
    prefill = []
    for _ in range(2):
        s2 = m.new_state()
        t1 = time.perf_counter()
        logits = m.forward(long, s2)
        prefill.append(time.perf_counter() - t1)
    import numpy as np

    finite = bool(np.isfinite(logits).all())
    state_mib = m.new_state().to_numpy().nbytes / 2**20
    m.close()
    os.environ["RWKVC_CUDA_GRAPHS"] = "0"
    no_graphs = decode_only(path, device)
    del os.environ["RWKVC_CUDA_GRAPHS"]
    return {"load_s": load_s, "decode_ms_no_graphs": no_graphs, "decode_ms": statistics.median(times) * 1e3, "decode_ms_min": min(times) * 1e3,
            "prefill_tps": 512 / min(prefill), "finite": finite, "state_mib": state_mib}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1.5b")
    p.add_argument("--types", default="f16,q8_0,q4_0")
    p.add_argument("--cache", default="/tmp/rwkvchat-bench")
    p.add_argument("--device", default="cuda")
    p.add_argument("--deadline", type=float, default=1e9, help="seconds after which remaining items are skipped")
    p.add_argument("--json", default=None, help="also write the results here (after every item)")
    a = p.parse_args()
    start = time.perf_counter()
    bw, gpu = gpu_bandwidth() if a.device.startswith("cuda") else (None, "cpu")
    results: dict[str, Any] = {"gpu": gpu, "copy_bw_bytes_s": bw, "rows": [], "skipped": []}
    print(f"# {gpu}; device-to-device copy {bw / 1e12 if bw else float('nan'):.2f} TB/s", flush=True)
    print("| size | type | file MiB | decode ms/token | bound ms | % of bound | without graphs ms | state copy ms | "
          "prefill tok/s | state MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for size in a.sizes.split(","):
        for ty in a.types.split(","):
            if time.perf_counter() - start > a.deadline:
                results["skipped"].append(f"{size} {ty}")
                continue
            path = ensure_model(Path(a.cache), size, ty)
            stats = bench.file_stats(path)
            r = measure(path, a.device)
            bound_ms = stats["bytes_per_token"] / bw * 1e3 if bw else None
            copy_ms = state_copy_ms(int(r["state_mib"] * 2**20 / 4)) if bw else None
            row = {"size": size, "type": ty, **stats, **r, "bound_ms": bound_ms, "state_copy_ms": copy_ms}
            results["rows"].append(row)
            pct = f"{100 * bound_ms / r['decode_ms']:.0f}%" if bound_ms else "-"
            bound = f"{bound_ms:.2f}" if bound_ms else "-"
            copy = f"{copy_ms:.2f}" if copy_ms else "-"
            print(f"| {size} | {ty} | {stats['file_bytes'] / 2**20:.0f} | {r['decode_ms']:.2f} | {bound} | {pct} | "
                  f"{r['decode_ms_no_graphs']:.2f} | {copy} | {r['prefill_tps']:.0f} | {r['state_mib']:.1f} |",
                  flush=True)
            if a.json:
                Path(a.json).write_text(json.dumps(results, indent=1))
    if results["skipped"]:
        print(f"# skipped (deadline): {', '.join(results['skipped'])}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
