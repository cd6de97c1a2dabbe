#!/bin/sh
# Build the kernels with a C compiler alone and compare every ISA the CPU runs with the scalar kernels.
#   csrc/tests/run_selftest.sh                 native build
#   CC=aarch64-linux-gnu-gcc RUN="qemu-aarch64 -L /usr/aarch64-linux-gnu" csrc/tests/run_selftest.sh
set -e
here=$(cd "$(dirname "$0")" && pwd)
src="$here/.."
out=${OUT_DIR:-/tmp/edgelm-selftest}
mkdir -p "$out"
CC=${CC:-gcc}
sources=$(ls "$src"/*.c | grep -v '/module[a-z_]*\.c$')
$CC -O2 -std=gnu11 -ffp-contract=off -fno-math-errno -Wall -Wextra -Wno-unused-parameter \
    -Wno-missing-field-initializers -I"$src" $sources "$here/selftest.c" -o "$out/selftest" -pthread -lm
${RUN:-} "$out/selftest"
