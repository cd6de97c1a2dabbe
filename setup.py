"""Build of the native kernels, `edgelm._native` (everything else is in pyproject.toml).

One compile carries every ISA: SIMD code is compiled per function/file with target attributes and
chosen at run time, so the build needs no -march flags and the wheel runs on any CPU of its
architecture.  A failed compile leaves a working package on the NumPy kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = Path("csrc")
SOURCES = sorted(str(p) for p in CSRC.glob("*.c"))
HEADERS = sorted(str(p) for p in [*CSRC.glob("*.h"), *CSRC.glob("*.inc")])

COMPILE_ARGS = [
    "-O3",
    "-std=gnu11",
    # Plain C float expressions keep their rounding (the kernels mirror the reference's roundings);
    # the SIMD code asks for fused multiply-adds explicitly.
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
]
LINK_ARGS = ["-pthread", "-lm"]


class OptionalBuildExt(build_ext):
    """Build the extension if possible; without a compiler the package still works on NumPy."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any failure (no compiler, bad flags) leaves the pure-Python package
            print(f"edgelm: native kernels not built ({exc}); using the NumPy kernels", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # any failure (no compiler, bad flags) leaves the pure-Python package
            print(f"edgelm: native kernels not built ({exc}); using the NumPy kernels", file=sys.stderr)


setup(
    ext_modules=[
        Extension(
            "edgelm._native",
            sources=SOURCES,
            depends=HEADERS,
            include_dirs=[str(CSRC)],
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
