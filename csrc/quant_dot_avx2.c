/* AVX2 + FMA + F16C dot-product kernels (Haswell / Zen 1 and later). */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <string.h>

#include "fp16.h"
#include "isa_kernels.h"

#define SUFFIX(name) name##_avx2

/* Unsigned bytes (at most 6 bits, so the int16 pair sums cannot saturate) times int8 -> 8 x int32. */
static inline __m256i dot_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* int8 x int8: move w's sign onto x so maddubs sees |w| (at most 128: pair sums fit int16). */
static inline __m256i dot_s8s8(__m256i w, __m256i x) {
    return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

static inline __m256i madd_scaled(__m256i acc, __m256i p16, __m256i sc16) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, sc16));
}

/* Bit l of `bits` -> byte l: broadcast each source byte to 8 lanes, set every bit but the one that
 * lane tests, and compare with all-ones. */
static inline __m256i bits_to_bytes(uint32_t bits) {
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), shuf);
    v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}

#include "quant_dot_x86.inc"

#endif
