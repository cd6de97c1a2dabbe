/* AVX-512 (F, BW, VL, DQ) + VNNI dot-product kernels (Ice Lake, Zen 4 and later).
 *
 * The shared x86 template with VNNI primitives, and 512-bit kernels of its own for the types that
 * matter most (block32_avx512.inc, kquant_avx512.inc).  Many-token products go to the tiled kernel
 * in quant_gemm_avx512.c. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")
#include <immintrin.h>
#include <string.h>

#include "fp16.h"
#include "isa_kernels.h"

#define SUFFIX(name) name##_avx512

static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

static inline __m256i dot_s8s8(__m256i w, __m256i x) {
    return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

static inline __m256i madd_scaled(__m256i acc, __m256i p16, __m256i sc16) {
    return _mm256_dpwssd_epi32(acc, p16, sc16);
}

static inline __m256i bits_to_bytes(uint32_t bits) { return _mm256_movm_epi8(bits); }

#define BLOCK32_ROWS rows_block32_zmm
#define ISA_EXTRA_KERNELS "block32_avx512.inc"
#define K_WITH_MIN_ROWS rows_k_with_min_zmm
#define Q6_K_ROWS rows_q6_K_zmm
#define ISA_EXTRA_KERNELS_2 "kquant_avx512.inc"
#include "quant_dot_x86.inc"

#endif
