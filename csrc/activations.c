/* Activation quantization (scalar) and the generic dot path.
 *
 * Activations are rounded exactly as reference.quantize_activations does: the SIMD quantizers in
 * the ISA files compute the same values with the same IEEE operations (one division, one multiply,
 * round-half-even), so every ISA feeds its integer kernels identical quants. */
#include <math.h>
#include <stdlib.h>

#include "fp16.h"
#include "kernels.h"

#define Q8_MAX 127.0f

enum act_kind act_kind_for(int weight_type) {
    switch (weight_type) {
    case GGML_TYPE_F32: return ACT_F32;
    case GGML_TYPE_F16: return ACT_F16;
    case GGML_TYPE_BF16: return ACT_BF16;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0: return ACT_Q8_0;
    default: return ACT_Q8_K;
    }
}

/* Blocks of 32: d = amax/127 kept as f16, q = rint(x * 127/amax); s = d * sum(q). */
void quantize_q8_0_scalar(const float *x, int64_t k, int8_t *q, float *d, float *s) {
    for (int64_t b = 0; b < k / QK; b++) {
        const float *xb = x + b * QK;
        float amax = 0.0f;
        for (int l = 0; l < QK; l++) amax = fmaxf(amax, fabsf(xb[l]));
        const float inv = amax != 0.0f ? Q8_MAX / amax : 0.0f;
        int sum = 0;
        for (int l = 0; l < QK; l++) {
            const int v = (int)nearbyintf(xb[l] * inv);
            q[b * QK + l] = (int8_t)v;
            sum += v;
        }
        d[b] = round_f16(amax / Q8_MAX);
        s[b] = d[b] * (float)sum;
    }
}

/* Blocks of 256: scale = -(signed max)/127 in f32, q = min(rint(x * iscale), 127); sums per 16. */
void quantize_q8_K_scalar(const float *x, int64_t k, int8_t *q, float *d, int16_t *bsums) {
    for (int64_t b = 0; b < k / QK_K; b++) {
        const float *xb = x + b * QK_K;
        float amax = 0.0f, signed_max = 0.0f;
        for (int l = 0; l < QK_K; l++) {
            if (fabsf(xb[l]) > amax) { /* strictly greater: the first of equal magnitudes wins */
                amax = fabsf(xb[l]);
                signed_max = xb[l];
            }
        }
        const float iscale = signed_max != 0.0f ? -Q8_MAX / signed_max : 0.0f;
        for (int l = 0; l < QK_K; l++) {
            const float v = fminf(nearbyintf(xb[l] * iscale), Q8_MAX);
            q[b * QK_K + l] = (int8_t)v;
        }
        for (int j = 0; j < QK_K_SUB16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += q[b * QK_K + 16 * j + l];
            bsums[b * QK_K_SUB16 + j] = (int16_t)sum;
        }
        d[b] = iscale != 0.0f ? 1.0f / iscale : 0.0f;
    }
}

/* Any type: dequantize the weight row and the activations, dot in double.  For types without a
 * dedicated kernel (Q2_K, Q3_K); exact up to summation order. */
void dot_rows_generic(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    const struct qmatrix *w = m->w;
    const struct act *a = m->a;
    const int64_t k = w->k, n_tok = t1 - t0;
    float *wrow = malloc((size_t)(k * (1 + n_tok)) * sizeof(float));
    if (!wrow) return;
    float *xs = wrow + k; /* (n_tok, k) activations as the reference sees them */
    for (int64_t t = t0; t < t1; t++) {
        float *xrow = xs + (t - t0) * k;
        if (a->kind == ACT_Q8_K || a->kind == ACT_Q8_0) {
            const int64_t bs = a->kind == ACT_Q8_K ? QK_K : QK;
            for (int64_t i = 0; i < k; i++)
                xrow[i] = (float)a->q[t * k + i] * a->d[t * a->n_blocks + i / bs];
        } else {
            for (int64_t i = 0; i < k; i++) xrow[i] = a->xf[t * k + i];
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        dequantize_row(w->type, w->data + r * w->row_bytes, wrow, k);
        for (int64_t t = t0; t < t1; t++) {
            const float *xrow = xs + (t - t0) * k;
            double sum = 0.0;
            for (int64_t i = 0; i < k; i++) sum += (double)wrow[i] * (double)xrow[i];
            m->y[t * m->y_stride + r] = (float)sum;
        }
    }
    free(wrow);
}
