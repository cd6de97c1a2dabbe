"""Native kernel throughput: matmul GB/s of weights streamed (decode) and GOP/s (prefill).

Decode (one token) is bound by memory bandwidth: the figure to compare is GB/s of packed weights read
per second against the machine's bandwidth, both as given (--bandwidth-1t/--bandwidth-2t, GB/s: the
figures of docs' PERFORMANCE.md by default) and as probed in the same run (every thread summing a
512 MiB buffer).  Several copies of each matrix, more than the last-level cache holds together, are
cycled so every call reads its weights from memory.  Prefill (T tokens) is compute-bound: GOP/s
counts 2 * T * N * K.  Times are the best of several runs (the least disturbed by other processes).

    python benchmarks/bench_kernels.py [--isa avx512] [--threads 1 2] [--types Q8_0 Q5_0 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgelm.gguf.constants import BLOCK_LAYOUTS, QK_K, GGMLType
from edgelm.kernels.native import NativeOps, available_isas
from edgelm.weights.qtensor import QTensor

# Decode shapes (N, K) of Qwen2.5-0.5B: ffn gate/up, ffn down, the output head (tied embeddings).
# K-quants need K % 256 == 0, so they use 1024 where the model has 896 (the bytes are alike).
DECODE_SHAPES = [(4864, 896), (896, 4864), (151936, 896)]
PREFILL_SHAPES = [(4864, 896), (896, 4864)]
COLD_BYTES = 256 << 20  # matrices cycled per measurement: well past a 32 MiB L3
PROBE_BYTES = 512 << 20
F16_BYTES = 2
_SCALE_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, F16_BYTES),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, F16_BYTES),
    GGMLType.Q8_0: (0,),
    GGMLType.Q4_K: (0, F16_BYTES),
    GGMLType.Q5_K: (0, F16_BYTES),
    GGMLType.Q6_K: (BLOCK_LAYOUTS[GGMLType.Q6_K].type_size - F16_BYTES,),
}


@dataclass(frozen=True)
class Result:
    kind: str  # "decode" or "prefill"
    isa: str
    threads: int
    type: str
    n: int
    k: int
    tokens: int
    seconds: float
    gb_per_s: float  # packed weight bytes per second
    gop_per_s: float  # 2 * T * N * K per second
    share_of_bandwidth: float | None  # decode: gb_per_s / the bandwidth given
    share_of_probe: float | None  # decode: gb_per_s / the bandwidth probed in this run


def random_weights(rng: np.random.Generator, ggml_type: GGMLType, n: int, k: int) -> QTensor:
    """Random packed weights with modest positive f16 scales (no subnormals: they slow the FPU)."""
    if ggml_type in (GGMLType.F16, GGMLType.F32):
        dtype = np.float16 if ggml_type == GGMLType.F16 else np.float32
        raw = rng.standard_normal((n, k)).astype(dtype).view(np.uint8)
    else:
        block_size, type_size = BLOCK_LAYOUTS[ggml_type]
        n_blocks = n * k // block_size
        raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        for offset in _SCALE_FIELDS[ggml_type]:
            scales = rng.uniform(0.005, 0.01, n_blocks).astype(np.float16)
            raw[:, offset : offset + F16_BYTES] = scales.view(np.uint8).reshape(n_blocks, F16_BYTES)
    return QTensor.from_buffer("w", ggml_type, (n, k), np.ascontiguousarray(raw).reshape(-1))


def best_time(fn: Callable[[], object], repeats: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def shape_for(ggml_type: GGMLType, n: int, k: int) -> tuple[int, int]:
    if k % BLOCK_LAYOUTS[ggml_type].block_size:
        k = (k + QK_K - 1) // QK_K * QK_K
    return n, k


def probe_bandwidth(ops: NativeOps) -> float:
    """GB/s of every thread of `ops` reading a buffer far larger than the caches."""
    buf = np.ones(PROBE_BYTES, np.uint8)
    kernels = ops._k
    kernels.stream_read(buf)
    return PROBE_BYTES / best_time(lambda: kernels.stream_read(buf), repeats=1) / 1e9


def bench_decode(
    ops: NativeOps,
    ggml_type: GGMLType,
    n: int,
    k: int,
    bandwidth: float | None,
    probed: float,
    prepare: bool = True,
) -> Result:
    rng = np.random.default_rng(0)
    first = random_weights(rng, ggml_type, n, k)
    copies = max(2, COLD_BYTES // first.nbytes)
    mats = [first] + [
        QTensor.from_buffer("w", ggml_type, (n, k), first.data.copy().reshape(-1)) for _ in range(copies - 1)
    ]
    mats = ops.prepare(mats) if prepare else mats
    x = rng.standard_normal((1, k)).astype(np.float32)
    state = {"i": 0}

    def step() -> None:
        ops.matmul(x, mats[state["i"] % len(mats)])
        state["i"] += 1

    for _ in range(len(mats)):  # touch every copy once
        step()
    seconds = best_time(step, repeats=len(mats))
    gbs = first.nbytes / seconds / 1e9
    return Result(
        "decode",
        ops.name,
        ops.n_threads,
        ggml_type.name,
        n,
        k,
        1,
        seconds,
        gbs,
        2 * n * k / seconds / 1e9,
        gbs / bandwidth if bandwidth else None,
        gbs / probed,
    )


def bench_prefill(
    ops: NativeOps, ggml_type: GGMLType, n: int, k: int, tokens: int, prepare: bool = True
) -> Result:
    rng = np.random.default_rng(1)
    w = random_weights(rng, ggml_type, n, k)
    w = ops.prepare([w])[0] if prepare else w  # repacked as a model load would
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    ops.matmul(x, w)
    seconds = best_time(lambda: ops.matmul(x, w), repeats=2)
    ops_per_s = 2 * tokens * n * k / seconds / 1e9
    return Result(
        "prefill", ops.name, ops.n_threads, ggml_type.name, n, k, tokens, seconds, 0.0, ops_per_s, None, None
    )


def bench_overhead(ops: NativeOps) -> dict[str, float]:
    """Microseconds per empty task on all threads, and per small matmul through NativeOps."""
    kernels = ops._k  # the extension object: its dispatch() runs empty tasks
    n = 20000
    dispatch = best_time(lambda: kernels.dispatch(n), repeats=1) / n
    w = random_weights(np.random.default_rng(2), GGMLType.Q8_0, 16, 64)
    x = np.ones((1, 64), np.float32)
    small = best_time(lambda: ops.matmul(x, w), repeats=2000)
    return {"dispatch_us": dispatch * 1e6, "small_matmul_us": small * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    isas = available_isas()
    parser.add_argument("--isa", default=isas[-1] if isas else None, choices=isas)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--types", nargs="+", default=["Q8_0", "Q5_0", "Q4_K", "Q6_K"])
    parser.add_argument("--tokens", type=int, default=512, help="prefill tokens")
    parser.add_argument("--bandwidth-1t", type=float, default=23.8, help="GB/s one thread can read")
    parser.add_argument("--bandwidth-2t", type=float, default=36.5, help="GB/s two threads can read")
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument(
        "--file-layout", action="store_true", help="weights as the file stores them (no repacking at load)"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args()
    if args.isa is None:
        raise SystemExit("edgelm's native kernels are not built")
    types = [GGMLType[name] for name in args.types]
    for threads in args.threads:
        ops = NativeOps(args.isa, threads)
        bandwidth = args.bandwidth_1t if threads == 1 else args.bandwidth_2t if threads == 2 else None
        overhead = bench_overhead(ops)
        probed = probe_bandwidth(ops)
        print(
            f"{ops.name} threads={threads}: dispatch {overhead['dispatch_us']:.2f} us, "
            f"small matmul call {overhead['small_matmul_us']:.2f} us, "
            f"bandwidth given {bandwidth} GB/s, probed {probed:.1f} GB/s"
        )
        results = []
        for ggml_type in types:
            for n, k in DECODE_SHAPES:
                results.append(
                    bench_decode(
                        ops, ggml_type, *shape_for(ggml_type, n, k), bandwidth, probed, not args.file_layout
                    )
                )
            if not args.skip_prefill:
                for n, k in PREFILL_SHAPES:
                    results.append(
                        bench_prefill(
                            ops, ggml_type, *shape_for(ggml_type, n, k), args.tokens, not args.file_layout
                        )
                    )
        for r in results:
            if args.json:
                print(json.dumps(asdict(r)))
            elif r.kind == "decode":
                share = f" {100 * r.share_of_bandwidth:4.0f}% of given" if r.share_of_bandwidth else ""
                share += f" {100 * (r.share_of_probe or 0):4.0f}% of probed"
                print(
                    f"  decode  {r.type:5s} {r.n:>6}x{r.k:<5} {r.seconds * 1e6:9.1f} us "
                    f"{r.gb_per_s:6.1f} GB/s{share}"
                )
            else:
                print(
                    f"  prefill {r.type:5s} {r.n:>6}x{r.k:<5} T={r.tokens} {r.seconds * 1e3:8.2f} ms "
                    f"{r.gop_per_s:6.1f} GOP/s"
                )


if __name__ == "__main__":
    main()
