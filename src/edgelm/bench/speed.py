"""`edgelm bench speed`: edgelm against llama.cpp on the same synthetic files, same threads, one run.

For each model shape and quantization: write the file (once, cached), then measure each engine in its
own process (prefill of a 512-token prompt, 128 generated tokens, a few repetitions; load time; load →
first token of a 16-token prompt; peak RSS).  Results are ratios edgelm / llama.cpp — the machines are
noisy, so only numbers from the same run are compared — printed as a table and saved as JSON, with
the memory-bandwidth bound of decode and the share of it each engine reaches.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.convert.synth import synthesize
from edgelm.gguf.reader import GGUFFile
from edgelm.models.layout import OUTPUT, TOKEN_EMBD

__all__ = [
    "SpeedCase",
    "cpu_name",
    "decode_bytes_per_token",
    "kv_cache_bytes",
    "measure_bandwidth",
    "rss_limit_mb",
    "run_speed",
]

DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b")
DEFAULT_QUANTS = ("q8_0", "q4_k_m")
METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "load_to_first_token_s", "peak_rss_mb", "load_s")
# For these, smaller is better: the ratio is inverted so that > 1 always means edgelm is ahead.
LOWER_IS_BETTER = {"ttft_s", "load_to_first_token_s", "peak_rss_mb", "load_s"}
BANDWIDTH_BYTES = 1 << 30  # 1 GiB: far larger than any cache
ENGINES = ("edgelm", "llama.cpp")
DEFAULT_CTX = 4096  # the context both engines are loaded with
RSS_HEADROOM = 0.15  # peak RSS target: file + KV cache + 15%


@dataclass(frozen=True)
class SpeedCase:
    model: str
    quant: str
    path: Path


def decode_bytes_per_token(path: str | os.PathLike[str]) -> int:
    """Weight bytes one decode step reads: every matrix, the output head; one embedding row only."""
    f = GGUFFile.open(path)
    total = sum(t.n_bytes for t in f.tensors.values())
    if OUTPUT in f.tensors:  # untied: the embedding table is only gathered from
        total -= f.tensors[TOKEN_EMBD].n_bytes
    return total


def cpu_name() -> str:
    """The CPU's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kv_cache_bytes(path: str | os.PathLike[str], n_ctx: int = DEFAULT_CTX) -> int:
    """Bytes of an f16 KV cache for `n_ctx` tokens (sliding-window layers hold their window)."""
    from edgelm.models.config import ModelConfig
    from edgelm.runtime.kv_cache import sequence_cache_bytes

    return sequence_cache_bytes(ModelConfig.from_gguf(GGUFFile.open(path)), n_ctx)


def rss_limit_mb(path: str | os.PathLike[str], n_ctx: int = DEFAULT_CTX) -> float:
    """The peak-RSS target, in the unit the workers report (MiB): file + KV cache + 15%."""
    size = Path(path).stat().st_size + kv_cache_bytes(path, n_ctx)
    return size * (1 + RSS_HEADROOM) / 2**20


def _probe_bandwidth(threads: int) -> float:
    """`measure_bandwidth` in a fresh process (its 1 GiB buffer never counts against a worker)."""
    cmd = [
        sys.executable,
        "-c",
        f"from edgelm.bench.speed import measure_bandwidth; print(measure_bandwidth({threads}))",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return float("nan")


def measure_bandwidth(threads: int) -> float:
    """Memory read bandwidth in bytes/s with `threads` readers (the native probe if built)."""
    try:
        from edgelm.kernels import native

        return float(native.measure_bandwidth(BANDWIDTH_BYTES, threads))
    except (ImportError, RuntimeError):
        pass
    data = np.ones(BANDWIDTH_BYTES // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(np.bitwise_or.reduce, parts))
            best = max(best, data.nbytes / (time.perf_counter() - t0))
    return best


def _measure(engine: str, case: SpeedCase, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    cmd = [
        sys.executable, "-m", "edgelm.bench.worker", "--engine", engine, "--model", str(case.path),
        "--threads", str(threads), "--prompt", str(n_prompt), "--gen", str(n_gen), "--reps", str(reps),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(metric: str, ours: float, theirs: float) -> float:
    if not ours or not theirs:
        return float("nan")
    return theirs / ours if metric in LOWER_IS_BETTER else ours / theirs


def _cases(models: tuple[str, ...], quants: tuple[str, ...], cache_dir: Path, log) -> list[SpeedCase]:
    """A synth preset gives one random-weight file per quantization (written once); a stored model's
    name or a .gguf path is one real file, measured as it is."""
    from edgelm.convert.presets import PRESETS
    from edgelm.store import ModelStore, resolve_model

    cases = []
    for model in models:
        if model in PRESETS:
            for quant in quants:
                path = cache_dir / f"{model}-{quant}.gguf"
                if not path.exists():
                    log(f"writing {path.name} ...")
                    synthesize(model, quant, path)
                cases.append(SpeedCase(model, quant, path))
            continue
        path = resolve_model(model)
        stored = ModelStore().get(model)
        cases.append(SpeedCase(model, stored.quant.lower() if stored else "file", path))
    return cases


def run_speed(
    models: tuple[str, ...] = DEFAULT_MODELS,
    quants: tuple[str, ...] = DEFAULT_QUANTS,
    *,
    threads: int = 2,
    n_prompt: int = 512,
    n_gen: int = 128,
    reps: int = 3,
    cache_dir: Path | None = None,
    out: Path | None = None,
    log=print,
) -> dict:
    cache_dir = cache_dir or Path(
        os.environ.get("EDGELM_BENCH_DIR", Path.home() / ".cache" / "edgelm" / "bench")
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    bandwidth = measure_bandwidth(threads)
    log(f"memory read bandwidth ({threads} threads): {bandwidth / 1e9:.1f} GB/s")
    results = []
    for case in _cases(models, quants, cache_dir, log):
        model, quant, path = case.model, case.quant, case.path
        n_bytes = decode_bytes_per_token(path)
        row = {
            "model": model,
            "quant": quant,
            "file_mb": path.stat().st_size / 1e6,
            "decode_bytes_per_token": n_bytes,
            "rss_limit_mb": rss_limit_mb(path),
        }
        # The machine's bandwidth drifts over minutes: each engine's bound comes from probes
        # taken just before and just after its own measurement.
        probes = [_probe_bandwidth(threads)]
        for engine in ENGINES:
            log(f"measuring {engine} on {path.name} ...")
            row[engine] = _measure(engine, case, threads, n_prompt, n_gen, reps)
            probes.append(_probe_bandwidth(threads))
        row["bandwidth_gb_s"] = {
            "edgelm": (probes[0] + probes[1]) / 2e9,
            "llama.cpp": (probes[1] + probes[2]) / 2e9,
        }
        bound = {e: row["bandwidth_gb_s"][e] * 1e9 / n_bytes for e in ("edgelm", "llama.cpp")}
        row["decode_bound_tok_s"] = bound
        ours, theirs = row["edgelm"], row["llama.cpp"]
        row["ratio"] = {m: _ratio(m, ours.get(m, 0.0), theirs.get(m, 0.0)) for m in METRICS}
        row["bound_share"] = {e: row[e].get("decode_tok_s", 0.0) / bound[e] for e in ("edgelm", "llama.cpp")}
        results.append(row)
        log(format_row(row))
    notes = sorted({row[e]["note"] for row in results for e in ENGINES if "note" in row[e]})
    report = {
        "cpu": cpu_name(),
        "threads": threads,
        "prompt_tokens": n_prompt,
        "generated_tokens": n_gen,
        "reps": reps,
        "bandwidth_gb_s": bandwidth / 1e9,
        "results": results,
        "notes": notes,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    log(format_table(report))
    return report


def format_row(row: dict) -> str:
    e, ll, r = row["edgelm"], row["llama.cpp"], row["ratio"]
    if "error" in e or "error" in ll:
        return (
            f"{row['model']} {row['quant']}: edgelm {e.get('error', 'ok')}; llama.cpp {ll.get('error', 'ok')}"
        )
    return (
        f"{row['model']} {row['quant']}: decode {e['decode_tok_s']:.1f} vs {ll['decode_tok_s']:.1f} tok/s "
        f"({r['decode_tok_s']:.2f}x), prefill {e['prefill_tok_s']:.0f} vs {ll['prefill_tok_s']:.0f} tok/s "
        f"({r['prefill_tok_s']:.2f}x)"
    )


def _cell(row: dict, metric: str, scale: float = 1.0, fmt: str = ".0f") -> str:
    e, ll, r = row["edgelm"], row["llama.cpp"], row["ratio"]
    return f"{e[metric] * scale:{fmt}}/{ll[metric] * scale:{fmt}} ({r[metric]:.2f})"


def format_table(report: dict) -> str:
    head = (
        f"{'model':<14}{'quant':<8}{'prefill tok/s':>22}{'decode tok/s':>22}{'ttft ms':>18}"
        f"{'load→1st ms':>18}{'peak RSS MiB':>19}{'limit':>7}{'GB/s e/l':>12}{'share e/l':>12}"
    )
    lines = [
        f"edgelm vs llama.cpp on {report.get('cpu', '?')}, {report['threads']} threads, "
        f"prompt {report['prompt_tokens']}, "
        f"{report['generated_tokens']} generated (each cell: edgelm / llama.cpp (ratio, >1 = edgelm "
        "ahead)); limit: peak RSS target, file + KV cache + 15%; GB/s: memory bandwidth probed around "
        "each engine's run; share: decode tok/s over that bandwidth's bound",
        head,
    ]
    for row in report["results"]:
        if "error" in row["edgelm"] or "error" in row["llama.cpp"]:
            lines.append(format_row(row))
            continue

        share, bw = row["bound_share"], row["bandwidth_gb_s"]
        lines.append(
            f"{row['model']:<14}{row['quant']:<8}{_cell(row, 'prefill_tok_s'):>22}"
            f"{_cell(row, 'decode_tok_s', fmt='.1f'):>22}{_cell(row, 'ttft_s', 1000):>18}"
            f"{_cell(row, 'load_to_first_token_s', 1000):>18}{_cell(row, 'peak_rss_mb'):>19}"
            f"{row['rss_limit_mb']:>7.0f}{bw['edgelm']:>6.1f}/{bw['llama.cpp']:<5.1f}"
            f"{share['edgelm']:>6.0%}/{share['llama.cpp']:.0%}"
        )
    lines += [f"note: {note}" for note in report.get("notes", ())]
    return "\n".join(lines)
