/* GGUF tensor types and their block layouts, as the file stores them (ggml-common.h).
 *
 * Every kernel reads weights straight from these packed blocks, so the structs below must match
 * the file byte for byte: the static asserts at the bottom hold them to the sizes in
 * edgelm/gguf/constants.py. */
#ifndef EDGELM_GGML_TYPES_H
#define EDGELM_GGML_TYPES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Type ids as the GGUF file numbers them (GGMLQuantizationType). */
enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 31, /* one past the largest id: sizes the per-type kernel tables */
};

#define QK 32         /* weights per block of the simple quants (Q4_0 .. Q8_0) */
#define QK_K 256      /* weights per super-block of the K-quants */
#define K_SCALE_SIZE 12 /* packed 6-bit scales and mins of Q4_K / Q5_K */
#define QK_K_SUB16 (QK_K / 16) /* 16-weight sub-blocks of Q2_K, Q3_K, Q6_K */
#define QK_K_SUB32 (QK_K / 32) /* 32-weight sub-blocks of Q4_K, Q5_K */

typedef uint16_t ggml_half; /* IEEE binary16 bits */

typedef struct { ggml_half d; uint8_t qs[QK / 2]; } block_q4_0;
typedef struct { ggml_half d, m; uint8_t qs[QK / 2]; } block_q4_1;
typedef struct { ggml_half d; uint8_t qh[4]; uint8_t qs[QK / 2]; } block_q5_0;
typedef struct { ggml_half d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; } block_q5_1;
typedef struct { ggml_half d; int8_t qs[QK]; } block_q8_0;
typedef struct {
    uint8_t scales[QK_K / 16]; /* low nibble: scale, high nibble: min, per 16 weights */
    uint8_t qs[QK_K / 4];
    ggml_half d, dmin;
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    ggml_half d;
} block_q3_K;
typedef struct {
    ggml_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    ggml_half d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    ggml_half d;
} block_q6_K;

_Static_assert(sizeof(block_q4_0) == 2 + QK / 2, "Q4_0 block");
_Static_assert(sizeof(block_q4_1) == 4 + QK / 2, "Q4_1 block");
_Static_assert(sizeof(block_q5_0) == 2 + 4 + QK / 2, "Q5_0 block");
_Static_assert(sizeof(block_q5_1) == 4 + 4 + QK / 2, "Q5_1 block");
_Static_assert(sizeof(block_q8_0) == 2 + QK, "Q8_0 block");
_Static_assert(sizeof(block_q2_K) == QK_K / 16 + QK_K / 4 + 4, "Q2_K block");
_Static_assert(sizeof(block_q3_K) == QK_K / 8 + QK_K / 4 + 12 + 2, "Q3_K block");
_Static_assert(sizeof(block_q4_K) == 4 + K_SCALE_SIZE + QK_K / 2, "Q4_K block");
_Static_assert(sizeof(block_q5_K) == 4 + K_SCALE_SIZE + QK_K / 8 + QK_K / 2, "Q5_K block");
_Static_assert(sizeof(block_q6_K) == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, "Q6_K block");

/* Weights per block and bytes per block of a type; 0 for a type edgelm does not know. */
int ggml_block_size(int type);
size_t ggml_type_size(int type);

/* Q4_K / Q5_K: the 6-bit scale and min of 32-weight sub-block j (0..7) from the 12 packed bytes. */
static inline void k_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K / Q5_K: all eight 6-bit scales (out[0..7]) and mins (out[8..15]) at once, four bytes at a
 * time; the same bits as k_scale_min. */
static inline void k_scales_mins(const uint8_t *packed, uint8_t out[16]) {
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, low2 = 0x03030303u;
    uint32_t u[4];
    memcpy(u, packed, K_SCALE_SIZE);
    u[3] = ((u[2] >> 4) & low4) | (((u[1] >> 6) & low2) << 4); /* mins 4-7 */
    const uint32_t mins_low = u[1] & low6;                      /* mins 0-3 */
    u[1] = (u[2] & low4) | (((u[0] >> 6) & low2) << 4);         /* scales 4-7 */
    u[2] = mins_low;
    u[0] &= low6; /* scales 0-3 */
    memcpy(out, u, 16);
}

#endif
