"""Speed of edgelm against llama.cpp on the same synthetic model files (same as `edgelm bench speed`).

python benchmarks/bench_speed.py [--models smollm2-135m,qwen2.5-0.5b,llama-3.2-1b] [--quants q8_0,q4_k_m]
"""

from __future__ import annotations

import sys

from edgelm.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "speed", *sys.argv[1:]]))
