/* AArch64 NEON + dot-product kernels (Armv8.2-A dotprod: Apple M1, Cortex-A76, Neoverse N1 and later).
 *
 * Weights are unpacked to signed bytes (offsets subtracted) so sdot multiplies them with the int8
 * activations directly; each block's int32 lanes are scaled into a float vector accumulator, summed
 * horizontally once per row.  One row and one token at a time: the plain shape, correct first. */
#if defined(__aarch64__)
#pragma GCC target("arch=armv8.2-a+dotprod")
#include <arm_neon.h>
#include <string.h>

#include "fp16.h"
#include "isa_kernels.h"

#define ROWS_LOOP(DOT)                                                                    \
    for (int64_t r = r0; r < r1; r++) {                                                   \
        const uint8_t *row = m->w->data + r * m->w->row_bytes;                            \
        for (int64_t t = t0; t < t1; t++) m->y[t * m->y_stride + r] = DOT(row, m->a, t); \
    }

static inline int32x4_t dot32(int8x16_t w0, int8x16_t w1, const int8_t *x) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8(x)), w1, vld1q_s8(x + 16));
}

/* 16 bytes: 0x10 where bit i (i = 0..15) of `bits` is set. */
static inline uint8x16_t high_bits16(uint32_t bits) {
    static const uint8_t bit_of[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)bits), vdup_n_u8((uint8_t)(bits >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(bit_of)), vdupq_n_u8(0x10));
}

/* Blocks of 32: unpacked weights (w0 = weights 0-15, w1 = 16-31), scale and min of block b. */
static inline void unpack32(int type, const uint8_t *row, int64_t b, int8x16_t *w0, int8x16_t *w1, float *d,
                            float *min) {
    *min = 0.0f;
    if (type == GGML_TYPE_Q8_0) {
        const block_q8_0 *blk = (const block_q8_0 *)row + b;
        *w0 = vld1q_s8(blk->qs);
        *w1 = vld1q_s8(blk->qs + 16);
        *d = f16_to_f32(blk->d);
        return;
    }
    const uint8_t *qs;
    uint32_t qh = 0;
    int offset = 0;
    switch (type) {
    case GGML_TYPE_Q4_0: {
        const block_q4_0 *blk = (const block_q4_0 *)row + b;
        qs = blk->qs, *d = f16_to_f32(blk->d), offset = 8;
        break;
    }
    case GGML_TYPE_Q4_1: {
        const block_q4_1 *blk = (const block_q4_1 *)row + b;
        qs = blk->qs, *d = f16_to_f32(blk->d), *min = f16_to_f32(blk->m);
        break;
    }
    case GGML_TYPE_Q5_0: {
        const block_q5_0 *blk = (const block_q5_0 *)row + b;
        qs = blk->qs, *d = f16_to_f32(blk->d), offset = 16;
        memcpy(&qh, blk->qh, sizeof qh);
        break;
    }
    default: { /* Q5_1 */
        const block_q5_1 *blk = (const block_q5_1 *)row + b;
        qs = blk->qs, *d = f16_to_f32(blk->d), *min = f16_to_f32(blk->m);
        memcpy(&qh, blk->qh, sizeof qh);
        break;
    }
    }
    const uint8x16_t raw = vld1q_u8(qs);
    uint8x16_t lo = vandq_u8(raw, vdupq_n_u8(0x0F)), hi = vshrq_n_u8(raw, 4);
    if (type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q5_1) {
        lo = vorrq_u8(lo, high_bits16(qh));
        hi = vorrq_u8(hi, high_bits16(qh >> 16));
    }
    *w0 = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8((int8_t)offset));
    *w1 = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8((int8_t)offset));
}

static inline float dot_block32(int type, const uint8_t *row, const struct act *a, int64_t t) {
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks, *sx = a->s + t * a->n_blocks;
    float32x4_t acc = vdupq_n_f32(0.0f);
    float corr = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int8x16_t w0, w1;
        float d, min;
        unpack32(type, row, b, &w0, &w1, &d, &min);
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(dot32(w0, w1, x + b * QK)), d * dx[b]);
        corr += min * sx[b];
    }
    return vaddvq_f32(acc) + corr;
}

static float dot_q8_0(const uint8_t *row, const struct act *a, int64_t t) { return dot_block32(GGML_TYPE_Q8_0, row, a, t); }
static float dot_q4_0(const uint8_t *row, const struct act *a, int64_t t) { return dot_block32(GGML_TYPE_Q4_0, row, a, t); }
static float dot_q4_1(const uint8_t *row, const struct act *a, int64_t t) { return dot_block32(GGML_TYPE_Q4_1, row, a, t); }
static float dot_q5_0(const uint8_t *row, const struct act *a, int64_t t) { return dot_block32(GGML_TYPE_Q5_0, row, a, t); }
static float dot_q5_1(const uint8_t *row, const struct act *a, int64_t t) { return dot_block32(GGML_TYPE_Q5_1, row, a, t); }

/* Q4_K / Q5_K: d * sum_j scale_j * (q . x)_j - dmin * sum_j min_j * (sum x)_j per super-block. */
static inline float dot_k_with_min(const uint8_t *row, const struct act *a, int64_t t, int high_bit) {
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    const int16_t *bsums = a->bsums + t * (a->k / 16);
    const size_t block_bytes = high_bit ? sizeof(block_q5_K) : sizeof(block_q4_K);
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        const block_q4_K *w4 = (const block_q4_K *)(row + b * block_bytes);
        const block_q5_K *w5 = (const block_q5_K *)w4;
        const uint8_t *qs = high_bit ? w5->qs : w4->qs;
        uint8_t sm[16];
        k_scales_mins(w4->scales, sm);
        const uint8x16_t qh0 = high_bit ? vld1q_u8(w5->qh) : vdupq_n_u8(0);
        const uint8x16_t qh1 = high_bit ? vld1q_u8(w5->qh + 16) : vdupq_n_u8(0);
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < QK_K_SUB32; j++) {
            const uint8x16_t r0 = vld1q_u8(qs + 32 * (j / 2)), r1 = vld1q_u8(qs + 32 * (j / 2) + 16);
            uint8x16_t q0 = j % 2 ? vshrq_n_u8(r0, 4) : vandq_u8(r0, vdupq_n_u8(0x0F));
            uint8x16_t q1 = j % 2 ? vshrq_n_u8(r1, 4) : vandq_u8(r1, vdupq_n_u8(0x0F));
            if (high_bit) {
                const int8x16_t shift = vdupq_n_s8((int8_t)-j);
                q0 = vorrq_u8(q0, vshlq_n_u8(vandq_u8(vshlq_u8(qh0, shift), vdupq_n_u8(1)), 4));
                q1 = vorrq_u8(q1, vshlq_n_u8(vandq_u8(vshlq_u8(qh1, shift), vdupq_n_u8(1)), 4));
            }
            const int32x4_t p = dot32(vreinterpretq_s8_u8(q0), vreinterpretq_s8_u8(q1), x + b * QK_K + 32 * j);
            sumi += sm[j] * vaddvq_s32(p);
            summ += sm[8 + j] * (bsums[b * QK_K_SUB16 + 2 * j] + bsums[b * QK_K_SUB16 + 2 * j + 1]);
        }
        sum += dx[b] * (f16_to_f32(w4->d) * (float)sumi - f16_to_f32(w4->dmin) * (float)summ);
    }
    return sum;
}

static float dot_q4_K(const uint8_t *row, const struct act *a, int64_t t) { return dot_k_with_min(row, a, t, 0); }
static float dot_q5_K(const uint8_t *row, const struct act *a, int64_t t) { return dot_k_with_min(row, a, t, 1); }

static float dot_q6_K(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q6_K *w = (const block_q6_K *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int32_t sumi = 0;
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = w[b].ql + 64 * half, *qh = w[b].qh + 32 * half;
            for (int k = 0; k < 4; k++) {
                for (int sub = 0; sub < 2; sub++) { /* 16 weights with one scale */
                    const uint8x16_t low_raw = vld1q_u8(ql + 32 * (k % 2) + 16 * sub);
                    const uint8x16_t low = k / 2 ? vshrq_n_u8(low_raw, 4) : vandq_u8(low_raw, vdupq_n_u8(0x0F));
                    const uint8x16_t high = vandq_u8(vshlq_u8(vld1q_u8(qh + 16 * sub), vdupq_n_s8((int8_t)(-2 * k))),
                                                     vdupq_n_u8(3));
                    const int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, vshlq_n_u8(high, 4))), vdupq_n_s8(32));
                    const int8_t *xs = x + b * QK_K + 128 * half + 32 * k + 16 * sub;
                    const int32_t dot = vaddvq_s32(vdotq_s32(vdupq_n_s32(0), q, vld1q_s8(xs)));
                    sumi += w[b].scales[8 * half + 2 * k + sub] * dot;
                }
            }
        }
        sum += dx[b] * f16_to_f32(w[b].d) * (float)sumi;
    }
    return sum;
}

static float dot_f32(const uint8_t *row, const struct act *a, int64_t t) {
    const float *w = (const float *)row, *x = a->xf + t * a->k;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= a->k; i += 4) acc = vfmaq_f32(acc, vld1q_f32(w + i), vld1q_f32(x + i));
    float sum = vaddvq_f32(acc);
    for (; i < a->k; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f16(const uint8_t *row, const struct act *a, int64_t t) {
    const uint16_t *w = (const uint16_t *)row;
    const float *x = a->xf + t * a->k;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= a->k; i += 4)
        acc = vfmaq_f32(acc, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w + i))), vld1q_f32(x + i));
    float sum = vaddvq_f32(acc);
    for (; i < a->k; i++) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

static float dot_bf16(const uint8_t *row, const struct act *a, int64_t t) {
    const uint16_t *w = (const uint16_t *)row;
    const float *x = a->xf + t * a->k;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t i = 0;
    for (; i + 4 <= a->k; i += 4)
        acc = vfmaq_f32(acc, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(w + i), 16)), vld1q_f32(x + i));
    float sum = vaddvq_f32(acc);
    for (; i < a->k; i++) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

#define ROWS_FN(type)                                                                                \
    void rows_##type##_neon(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1) { \
        ROWS_LOOP(dot_##type)                                                                        \
    }

ROWS_FN(q8_0)
ROWS_FN(q4_0)
ROWS_FN(q4_1)
ROWS_FN(q5_0)
ROWS_FN(q5_1)
ROWS_FN(q4_K)
ROWS_FN(q5_K)
ROWS_FN(q6_K)
ROWS_FN(f32)
ROWS_FN(f16)
ROWS_FN(bf16)

/* The quantizers are the scalar ones: a small share of a product's time. */
void quantize_q8_0_neon(const float *x, int64_t k, int8_t *q, float *d, float *s) { quantize_q8_0_scalar(x, k, q, d, s); }
void quantize_q8_K_neon(const float *x, int64_t k, int8_t *q, float *d, int16_t *bsums) {
    quantize_q8_K_scalar(x, k, q, d, bsums);
}

#endif
