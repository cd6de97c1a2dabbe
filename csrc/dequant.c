/* Scalar dequantization of one row, every type, with the reference's order of float operations
 * (edgelm/weights/dequant.py), so results match it bit for bit.  Used for embedding lookups and by
 * the generic matmul path of types without a dedicated kernel. */
#include <string.h>

#include "fp16.h"
#include "kernels.h"

int ggml_block_size(int type) {
    switch (type) {
    case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16: return 1;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q8_0: return QK;
    case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K: return QK_K;
    default: return 0;
    }
}

size_t ggml_type_size(int type) {
    switch (type) {
    case GGML_TYPE_F32: return sizeof(float);
    case GGML_TYPE_F16: case GGML_TYPE_BF16: return sizeof(uint16_t);
    case GGML_TYPE_Q4_0: return sizeof(block_q4_0);
    case GGML_TYPE_Q4_1: return sizeof(block_q4_1);
    case GGML_TYPE_Q5_0: return sizeof(block_q5_0);
    case GGML_TYPE_Q5_1: return sizeof(block_q5_1);
    case GGML_TYPE_Q8_0: return sizeof(block_q8_0);
    case GGML_TYPE_Q2_K: return sizeof(block_q2_K);
    case GGML_TYPE_Q3_K: return sizeof(block_q3_K);
    case GGML_TYPE_Q4_K: return sizeof(block_q4_K);
    case GGML_TYPE_Q5_K: return sizeof(block_q5_K);
    case GGML_TYPE_Q6_K: return sizeof(block_q6_K);
    default: return 0;
    }
}

/* Bit `bit` of the 32-bit little-endian field qh. */
static inline int qh_bit(const uint8_t *qh, int bit) { return (qh[bit / 8] >> (bit % 8)) & 1; }

static void dequant_q4_0(const block_q4_0 *b, float *y) {
    const float d = f16_to_f32(b->d);
    for (int l = 0; l < QK / 2; l++) {
        y[l] = d * (float)((b->qs[l] & 0xF) - 8);
        y[l + QK / 2] = d * (float)((b->qs[l] >> 4) - 8);
    }
}

static void dequant_q4_1(const block_q4_1 *b, float *y) {
    const float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
    for (int l = 0; l < QK / 2; l++) {
        y[l] = d * (float)(b->qs[l] & 0xF) + m;
        y[l + QK / 2] = d * (float)(b->qs[l] >> 4) + m;
    }
}

static void dequant_q5_0(const block_q5_0 *b, float *y) {
    const float d = f16_to_f32(b->d);
    for (int l = 0; l < QK / 2; l++) {
        y[l] = d * (float)(((b->qs[l] & 0xF) | (qh_bit(b->qh, l) << 4)) - 16);
        y[l + QK / 2] = d * (float)(((b->qs[l] >> 4) | (qh_bit(b->qh, l + QK / 2) << 4)) - 16);
    }
}

static void dequant_q5_1(const block_q5_1 *b, float *y) {
    const float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
    for (int l = 0; l < QK / 2; l++) {
        y[l] = d * (float)((b->qs[l] & 0xF) | (qh_bit(b->qh, l) << 4)) + m;
        y[l + QK / 2] = d * (float)((b->qs[l] >> 4) | (qh_bit(b->qh, l + QK / 2) << 4)) + m;
    }
}

static void dequant_q8_0(const block_q8_0 *b, float *y) {
    const float d = f16_to_f32(b->d);
    for (int l = 0; l < QK; l++) y[l] = d * (float)b->qs[l];
}

/* The 2-bit field of weight w (0..255) in Q2_K / Q3_K: 128-weight halves read 32 bytes four times. */
static inline int crumb(const uint8_t *qs, int w) {
    const int half = w / 128, shift = (w % 128) / 32, l = w % 32;
    return (qs[32 * half + l] >> (2 * shift)) & 3;
}

static void dequant_q2_K(const block_q2_K *b, float *y) {
    const float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
    for (int w = 0; w < QK_K; w++) {
        const uint8_t sc = b->scales[w / 16];
        const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
        y[w] = dl * (float)crumb(b->qs, w) - ml;
    }
}

static void dequant_q3_K(const block_q3_K *b, float *y) {
    const float d = f16_to_f32(b->d);
    int8_t scales[QK_K_SUB16];
    for (int i = 0; i < QK_K_SUB16; i++) {
        const int low = i < 8 ? (b->scales[i] & 0xF) : (b->scales[i - 8] >> 4);
        const int high = (b->scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        scales[i] = (int8_t)((low | (high << 4)) - 32);
    }
    for (int w = 0; w < QK_K; w++) {
        const float dl = d * (float)scales[w / 16];
        const int high = (b->hmask[w % 32] >> (w / 32)) & 1;
        y[w] = dl * (float)(crumb(b->qs, w) - (high ? 0 : 4));
    }
}

/* Q4_K / Q5_K: weight 32j + l of sub-block j is d*scale_j*q - dmin*min_j. */
static void dequant_k_with_min(ggml_half dh, ggml_half dminh, const uint8_t *packed, const uint8_t *qs,
                               const uint8_t *qh, float *y) {
    const float d = f16_to_f32(dh), dmin = f16_to_f32(dminh);
    uint8_t sm[16];
    k_scales_mins(packed, sm);
    for (int j = 0; j < QK_K_SUB32; j++) {
        const float dl = d * (float)sm[j], ml = dmin * (float)sm[8 + j];
        for (int l = 0; l < 32; l++) {
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            if (qh) q |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = dl * (float)q - ml;
        }
    }
}

static void dequant_q6_K(const block_q6_K *b, float *y) {
    const float d = f16_to_f32(b->d);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        for (int k = 0; k < 4; k++) {
            for (int l = 0; l < 32; l++) {
                const int w = 128 * half + 32 * k + l;
                const int low = (ql[32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
                const int q = (low | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                y[w] = (d * (float)b->scales[w / 16]) * (float)q;
            }
        }
    }
}

void dequantize_row(int type, const uint8_t *row, float *y, int64_t k) {
    const int64_t bs = ggml_block_size(type);
    const size_t ts = ggml_type_size(type);
    for (int64_t i = 0; i < k / bs; i++) {
        const void *b = row + i * ts;
        float *o = y + i * bs;
        switch (type) {
        case GGML_TYPE_F32: memcpy(o, b, sizeof(float)); break;
        case GGML_TYPE_F16: *o = f16_to_f32(*(const uint16_t *)b); break;
        case GGML_TYPE_BF16: *o = bf16_to_f32(*(const uint16_t *)b); break;
        case GGML_TYPE_Q4_0: dequant_q4_0(b, o); break;
        case GGML_TYPE_Q4_1: dequant_q4_1(b, o); break;
        case GGML_TYPE_Q5_0: dequant_q5_0(b, o); break;
        case GGML_TYPE_Q5_1: dequant_q5_1(b, o); break;
        case GGML_TYPE_Q8_0: dequant_q8_0(b, o); break;
        case GGML_TYPE_Q2_K: dequant_q2_K(b, o); break;
        case GGML_TYPE_Q3_K: dequant_q3_K(b, o); break;
        case GGML_TYPE_Q4_K: {
            const block_q4_K *q = b;
            dequant_k_with_min(q->d, q->dmin, q->scales, q->qs, NULL, o);
            break;
        }
        case GGML_TYPE_Q5_K: {
            const block_q5_K *q = b;
            dequant_k_with_min(q->d, q->dmin, q->scales, q->qs, q->qh, o);
            break;
        }
        case GGML_TYPE_Q6_K: dequant_q6_K(b, o); break;
        default: memset(o, 0, (size_t)bs * sizeof(float)); break;
        }
    }
}
