/* Scalar dot products of packed weight rows with quantized activations: the portable path, and
 * the plainest statement of what every SIMD kernel computes.
 *
 * Integer sums within a block are exact; the float scale of a block multiplies its integer sum.
 * Offsets and mins (Q4_1, Q5_1, Q4_K, Q5_K) multiply the activation block sums the quantizer kept. */
#include "fp16.h"
#include "isa_kernels.h"

/* y[t, r] = dot(row r, token t) for the ranges, with DOT(row, a, t) an expression of the type. */
#define ROWS_LOOP(DOT)                                                                       \
    for (int64_t r = r0; r < r1; r++) {                                                      \
        const uint8_t *row = m->w->data + r * m->w->row_bytes;                               \
        for (int64_t t = t0; t < t1; t++) m->y[t * m->y_stride + r] = DOT(row, m->a, t);    \
    }

static inline int q5_bit(const uint8_t qh[4], int l) { return (qh[l / 8] >> (l % 8)) & 1; }

static float dot_q8_0(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q8_0 *w = (const block_q8_0 *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int isum = 0;
        for (int l = 0; l < QK; l++) isum += w[b].qs[l] * x[b * QK + l];
        sum += f16_to_f32(w[b].d) * dx[b] * (float)isum;
    }
    return sum;
}

static float dot_q4_0(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q4_0 *w = (const block_q4_0 *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int isum = 0;
        for (int l = 0; l < QK / 2; l++) {
            isum += ((w[b].qs[l] & 0xF) - 8) * x[b * QK + l];
            isum += ((w[b].qs[l] >> 4) - 8) * x[b * QK + l + QK / 2];
        }
        sum += f16_to_f32(w[b].d) * dx[b] * (float)isum;
    }
    return sum;
}

static float dot_q4_1(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q4_1 *w = (const block_q4_1 *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks, *sx = a->s + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int isum = 0;
        for (int l = 0; l < QK / 2; l++) {
            isum += (w[b].qs[l] & 0xF) * x[b * QK + l];
            isum += (w[b].qs[l] >> 4) * x[b * QK + l + QK / 2];
        }
        sum += f16_to_f32(w[b].d) * dx[b] * (float)isum + f16_to_f32(w[b].m) * sx[b];
    }
    return sum;
}

static float dot_q5_0(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q5_0 *w = (const block_q5_0 *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int isum = 0;
        for (int l = 0; l < QK / 2; l++) {
            isum += (((w[b].qs[l] & 0xF) | (q5_bit(w[b].qh, l) << 4)) - 16) * x[b * QK + l];
            isum += (((w[b].qs[l] >> 4) | (q5_bit(w[b].qh, l + 16) << 4)) - 16) * x[b * QK + l + 16];
        }
        sum += f16_to_f32(w[b].d) * dx[b] * (float)isum;
    }
    return sum;
}

static float dot_q5_1(const uint8_t *row, const struct act *a, int64_t t) {
    const block_q5_1 *w = (const block_q5_1 *)row;
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks, *sx = a->s + t * a->n_blocks;
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        int isum = 0;
        for (int l = 0; l < QK / 2; l++) {
            isum += ((w[b].qs[l] & 0xF) | (q5_bit(w[b].qh, l) << 4)) * x[b * QK + l];
            isum += ((w[b].qs[l] >> 4) | (q5_bit(w[b].qh, l + 16) << 4)) * x[b * QK + l + 16];
        }
        sum += f16_to_f32(w[b].d) * dx[b] * (float)isum + f16_to_f32(w[b].m) * sx[b];
    }
    return sum;
}

/* Q4_K / Q5_K super-block: d * sum_j scale_j * (q . x)_j - dmin * sum_j min_j * (sum x)_j. */
static float dot_k_with_min(const uint8_t *row, const struct act *a, int64_t t, int with_high_bit) {
    const int8_t *x = a->q + t * a->k;
    const float *dx = a->d + t * a->n_blocks;
    const int16_t *bsums = a->bsums + t * (a->k / 16);
    const size_t block_bytes = with_high_bit ? sizeof(block_q5_K) : sizeof(block_q4_K);
    float sum = 0.0f;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        const uint8_t *blk = row + b * block_bytes;
        const block_q5_K *w5 = (const block_q5_K *)blk;
        const block_q4_K *w4 = (const block_q4_K *)blk;
        const uint8_t *qs = with_high_bit ? w5->qs : w4->qs;
        uint8_t sm[16];
        k_scales_mins(w4->scales, sm);
        int sumi = 0, summ = 0;
        for (int j = 0; j < QK_K_SUB32; j++) {
            int isum = 0;
            for (int l = 0; l < 32; l++) {
                int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
                if (with_high_bit) q |= ((w5->qh[l] >> j) & 1) << 4;
                isum += q * x[b * QK_K + 32 * j + l];
            }
            sumi += sm[j] * isum;
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
        int sumi = 0;
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = w[b].ql + 64 * half, *qh = w[b].qh + 32 * half;
            for (int k = 0; k < 4; k++) {
                int isum[2] = {0, 0}; /* the two 16-weight sub-blocks of these 32 weights */
                for (int l = 0; l < 32; l++) {
                    const int low = (ql[32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
                    const int q = (low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                    isum[l / 16] += q * x[b * QK_K + 128 * half + 32 * k + l];
                }
                const int sub = 8 * half + 2 * k;
                sumi += w[b].scales[sub] * isum[0] + w[b].scales[sub + 1] * isum[1];
            }
        }
        sum += dx[b] * f16_to_f32(w[b].d) * (float)sumi;
    }
    return sum;
}

static float dot_f32(const uint8_t *row, const struct act *a, int64_t t) {
    const float *w = (const float *)row, *x = a->xf + t * a->k;
    float sum = 0.0f;
    for (int64_t i = 0; i < a->k; i++) sum += w[i] * x[i];
    return sum;
}

static float dot_f16(const uint8_t *row, const struct act *a, int64_t t) {
    const uint16_t *w = (const uint16_t *)row;
    const float *x = a->xf + t * a->k;
    float sum = 0.0f;
    for (int64_t i = 0; i < a->k; i++) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

static float dot_bf16(const uint8_t *row, const struct act *a, int64_t t) {
    const uint16_t *w = (const uint16_t *)row;
    const float *x = a->xf + t * a->k;
    float sum = 0.0f;
    for (int64_t i = 0; i < a->k; i++) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

#define ROWS_FN(type)                                                                                   \
    void rows_##type##_scalar(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1) { \
        ROWS_LOOP(dot_##type)                                                                           \
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
