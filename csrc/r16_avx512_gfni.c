/* The R16 AVX-512 products for CPUs with GFNI too (Ice Lake and later, Zen 4 and later). */
#define R16_GFNI 1
#include "r16_avx512.c"
