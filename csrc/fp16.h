/* Scalar conversions between float and IEEE half / bfloat16, with no ISA requirement.
 *
 * Rounding is round-to-nearest-even, as NumPy's astype(float16) and the reference's bf16 rounding do,
 * so the scalar path rounds activations exactly like edgelm/kernels/reference.py. */
#ifndef EDGELM_FP16_H
#define EDGELM_FP16_H

#include <stdint.h>
#include <string.h>

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1F;
    const uint32_t man = h & 0x3FF;
    if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | (man << 13)); /* inf / NaN */
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
    if (man == 0) return f32_from_bits(sign);
    /* subnormal half: man * 2^-24, exact in float */
    const float mag = (float)man * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
}

static inline uint16_t f32_to_f16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) /* inf / NaN (keep NaN quiet and non-zero) */
        return (uint16_t)(sign | 0x7C00 | (ax > 0x7F800000u ? 0x200 | ((ax >> 13) & 0x3FF) : 0));
    if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {
        /* result is subnormal (or zero): add a magic number so the FPU does the rounding */
        const float magic = f32_from_bits(0x3F000000u); /* 0.5: ulp of 2^-1 is 2^-24 */
        const float r = f32_from_bits(ax) + magic;
        return (uint16_t)(sign | (f32_bits(r) - 0x3F000000u));
    }
    /* normal: round the 13 dropped bits to nearest even */
    const uint32_t odd = (ax >> 13) & 1;
    const uint32_t rounded = ax + 0xC8000FFFu + odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (rounded >> 13));
}

/* float -> nearest half -> float: the rounding the reference applies for F16 weights and the KV cache. */
static inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

static inline float bf16_to_f32(uint16_t h) { return f32_from_bits((uint32_t)h << 16); }

/* float rounded to bfloat16 precision, as the reference does: (bits + 0x7FFF + lsb) & 0xFFFF0000. */
static inline float round_bf16(float f) {
    const uint32_t x = f32_bits(f);
    return f32_from_bits((x + 0x7FFFu + ((x >> 16) & 1)) & 0xFFFF0000u);
}

#endif
