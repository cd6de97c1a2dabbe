"""llama.cpp (llama-cpp-python) as the reference and the rival: what it needs to run here.

llama.cpp built for the machine it is built on (`-march=native`, llama-cpp-python's default) carries
AMX kernels on CPUs that have AMX (Intel Sapphire Rapids and later), and those kernels crash the
process at its first product (llama.cpp issue #20824, a segmentation fault in
`ggml_backend_amx_mul_mat`).  Two ways round it:

- build llama-cpp-python without AMX (`AMX_FREE_CMAKE_ARGS`): its other kernels, the CPU weight
  repacking included, stay as they are: the fair rival and the fast reference;
- or, with such a build already installed, `avoid_amx()` turns off llama.cpp's extra buffer types
  (the AMX and CPU repacking) for the process: correct logits, but a slower llama.cpp.
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

__all__ = ["AMX_FREE_CMAKE_ARGS", "amx_build_on_amx_cpu", "avoid_amx"]

_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# CMAKE_ARGS for `pip install llama-cpp-python` on x86-64: -march=native without AMX.
AMX_FREE_CMAKE_ARGS = f'-DCMAKE_C_FLAGS="{_NO_AMX}" -DCMAKE_CXX_FLAGS="{_NO_AMX}"'
_CPU_FLAGS = Path("/proc/cpuinfo")


def _cpu_has_amx() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = _CPU_FLAGS.read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_int8" in line.split() for line in text.splitlines())


def _built_with_amx() -> bool:
    import llama_cpp.llama_cpp as lib

    path = getattr(lib, "_base_path", None)
    if path is None:
        return False
    for name in ("libggml-cpu.so", "libggml-cpu.dylib", "ggml-cpu.dll"):
        if (Path(path) / name).exists():
            try:
                ggml_cpu = ctypes.CDLL(str(Path(path) / name))  # already loaded by libllama: same handle
                return bool(ggml_cpu.ggml_cpu_has_amx_int8())
            except (OSError, AttributeError):
                return False
    return False


def amx_build_on_amx_cpu() -> bool:
    """Whether the installed llama-cpp-python would run its AMX kernels on this CPU."""
    return _cpu_has_amx() and _built_with_amx()


def avoid_amx() -> str | None:
    """Keep llama.cpp off its AMX kernels in this process; a note saying so, or None if not needed.

    Call before the first `llama_cpp.Llama(...)`.
    """
    if not amx_build_on_amx_cpu():
        return None
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params
    if getattr(default_params, "_edgelm_no_extra_bufts", False):
        return _NOTE

    def params_without_extra_bufts():  # llama.cpp's --no-repack
        params = default_params()
        params.use_extra_bufts = False
        return params

    params_without_extra_bufts._edgelm_no_extra_bufts = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = params_without_extra_bufts
    return _NOTE


_NOTE = (
    "llama.cpp runs without its extra buffer types (no AMX, no weight repacking): this "
    "llama-cpp-python build has AMX kernels, which crash on this CPU (llama.cpp #20824). "
    f"Rebuild it without: CMAKE_ARGS='{AMX_FREE_CMAKE_ARGS}' pip install --no-cache-dir "
    "--force-reinstall --no-deps llama-cpp-python==0.3.36"
)
