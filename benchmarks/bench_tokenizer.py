"""Tokenizer timings: building it from a GGUF file, encoding and decoding about 1 MB of text.

Usage: python benchmarks/bench_tokenizer.py [GGUF ...]   (default: the vocab files in tests/data/vocab)
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from edgelm.gguf.reader import GGUFFile
from edgelm.tokenizer import Tokenizer

VOCAB_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "vocab"
TARGET_BYTES = 1 << 20
WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "tokenizer model llama quantized inference latency 2048 3.14159 1,000,000 don't it's we'll "
    "Äpfel über naïve café нещо на Български 我想在apple工作 日本語のテキスト 한국어 🦙 🚀 ✅"
)
CODE = "def f(x):\n    return x * 2  # double\n\nfor i in range(10):\n\tprint(f(i))\n"


def sample_text(n_bytes: int, seed: int = 0) -> str:
    """Mixed prose, code, numbers, white space runs and non-Latin scripts, about `n_bytes` of UTF-8."""
    rng = random.Random(seed)
    words = WORDS.split()
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        if rng.random() < 0.05:
            chunk = CODE
        else:
            chunk = " ".join(rng.choice(words) for _ in range(rng.randrange(5, 30)))
            chunk += rng.choice([". ", ".\n", "\n\n", "!   ", ", "])
        parts.append(chunk)
        size += len(chunk.encode("utf-8"))
    return "".join(parts)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths = args.paths or sorted(VOCAB_DIR.glob("*.gguf"))
    text = sample_text(TARGET_BYTES)
    n_bytes = len(text.encode("utf-8"))
    print(f"text: {n_bytes / 1e6:.2f} MB")
    print(f"{'vocab':<28} {'n_vocab':>8} {'read':>7} {'build':>7} {'encode':>8} {'tok/s':>10} {'decode':>8}")
    for path in paths:
        t_read, gguf = best_of(lambda p=path: GGUFFile.open(p), args.repeat)
        t_build, tok = best_of(lambda g=gguf: Tokenizer.from_metadata(g.metadata, g.path), args.repeat)
        tok.encode(text[:1000])  # warm up
        t_enc, ids = best_of(lambda t=tok: t.encode(text), args.repeat)
        t_dec, _ = best_of(lambda t=tok, i=ids: t.decode(i), args.repeat)
        print(
            f"{path.name:<28} {tok.vocab_size:>8} {t_read:>6.3f}s {t_build:>6.3f}s {t_enc:>7.3f}s "
            f"{len(ids) / t_enc:>10.0f} {t_dec:>7.3f}s"
        )


if __name__ == "__main__":
    main()
