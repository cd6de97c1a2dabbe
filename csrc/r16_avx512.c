/* Products with R16 weights (repack.h) in AVX-512 VNNI: one row per 32-bit lane.
 *
 * A block of 16 rows is 8 chunk vectors; each meets the 4 activations of its chunk, broadcast, in a
 * vpdpbusd: 16 rows x 4 weights per instruction, no unpacking for Q8_0, a mask and a shift for the
 * nibbles.  The block's 16 scales come with one load and scale 16 integer sums at once; results are
 * stored 16 rows at a time.  The same tile serves one token (decode) and many (prefill, 8 tokens per
 * tile with the group's weights in L2), and every (row, token) result goes through the same float
 * operations whatever the tile, so a sequence gets the same numbers alone or batched. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")
#include <immintrin.h>
#include <string.h>

#include "isa_kernels.h"
#include "repack.h"

#define INLINE static inline __attribute__((always_inline))
#define NT_MAX 8 /* tokens per tile */
#define PREFETCH_AHEAD 4096
#define CACHE_LINE 64

INLINE size_t block_bytes(int type) {
    switch (type) {
    case GGML_TYPE_Q4_0: return sizeof(block_q4_0);
    case GGML_TYPE_Q4_1: return sizeof(block_q4_1);
    case GGML_TYPE_Q5_0: return sizeof(block_q5_0);
    case GGML_TYPE_Q5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q8_0);
    }
}

INLINE __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* The 8 chunk vectors of one block as unsigned bytes, in chunk order. */
INLINE void block_chunks(const int type, const uint8_t *q, __m512i w[R16_CHUNKS]) {
    if (type == GGML_TYPE_Q8_0) {
        for (int c = 0; c < R16_CHUNKS; c++) w[c] = _mm512_loadu_si512(q + c * R16_VECTOR_BYTES);
        return;
    }
    const int high = type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q5_1;
    const uint8_t *nib = q + (high ? R16_MASK_BYTES : 0);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int p = 0; p < R16_NIBBLE_VECTORS; p++) {
        const __m512i v = _mm512_loadu_si512(nib + p * R16_VECTOR_BYTES);
        w[p] = _mm512_and_si512(v, low4);
        w[p + R16_NIBBLE_VECTORS] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
    }
    if (high) {
        const __m512i bit4 = _mm512_set1_epi8(0x10);
        for (int c = 0; c < R16_CHUNKS; c++) {
            uint64_t bits;
            memcpy(&bits, q + 8 * c, sizeof bits);
            w[c] = _mm512_mask_add_epi8(w[c], _cvtu64_mask64(bits), w[c], bit4);
        }
    }
}

/* One group (16 rows) x nt tokens from t0, into y + t * y_stride (16 floats per token). */
INLINE void r16_tile(const int type, const uint8_t *grp, const struct act *a, int64_t t0, const int nt, float *y,
                     int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const size_t bb = R16_ROWS * block_bytes(type);
    const int with_min = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const float offset = type == GGML_TYPE_Q4_0 ? -8.0f : type == GGML_TYPE_Q5_0 ? -16.0f : -128.0f;
    const size_t heads = (with_min ? 2 : 1) * R16_ROWS * sizeof(ggml_half);
    __m512 acc[NT_MAX], corr[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = corr[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb;
        for (size_t off = 0; off < bb; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 coef = with_min ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + heads / 2)))
                                     : _mm512_mul_ps(d, _mm512_set1_ps(offset));
        __m512i w[R16_CHUNKS];
        block_chunks(type, blk + heads, w);
        __m512i s[NT_MAX];
        if (nt == 1) {
            /* one token: two chains of partial sums, so the dot products need not wait on each other */
            const int8_t *x = a->q + t0 * k + b * QK;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int c = 0; c < R16_CHUNKS; c += 2) {
                s0 = _mm512_dpbusd_epi32(s0, w[c], bcast4(x + 4 * c));
                s1 = _mm512_dpbusd_epi32(s1, w[c + 1], bcast4(x + 4 * c + 4));
            }
            s[0] = _mm512_add_epi32(s0, s1);
        } else {
            for (int j = 0; j < nt; j++) s[j] = _mm512_setzero_si512();
            for (int c = 0; c < R16_CHUNKS; c++)
                for (int j = 0; j < nt; j++)
                    s[j] = _mm512_dpbusd_epi32(s[j], w[c], bcast4(a->q + (t0 + j) * k + b * QK + 4 * c));
        }
        for (int j = 0; j < nt; j++) {
            const int64_t at = (t0 + j) * nb + b;
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), _mm512_mul_ps(d, _mm512_set1_ps(a->d[at])), acc[j]);
            corr[j] = _mm512_fmadd_ps(coef, _mm512_set1_ps(a->s[at]), corr[j]);
        }
    }
    for (int j = 0; j < nt; j++) _mm512_storeu_ps(y + (t0 + j) * y_stride, _mm512_add_ps(acc[j], corr[j]));
}

#define TILE(T, NT) r16_tile(T, grp, a, t0, NT, y, m->y_stride)

INLINE void r16_groups_type(const int type, const struct matmul_args *m, int64_t g0, int64_t g1) {
    const struct act *a = m->a;
    const size_t group_bytes = R16_ROWS * m->w->row_bytes;
    for (int64_t t0 = 0; t0 < a->n_tok; t0 += NT_MAX) {
        const int nt = a->n_tok - t0 < NT_MAX ? (int)(a->n_tok - t0) : NT_MAX;
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t *grp = m->w->data + g * group_bytes;
            float *y = m->y + g * R16_ROWS;
            switch (nt) {
            case 8: TILE(type, 8); break;
            case 7: TILE(type, 7); break;
            case 6: TILE(type, 6); break;
            case 5: TILE(type, 5); break;
            case 4: TILE(type, 4); break;
            case 3: TILE(type, 3); break;
            case 2: TILE(type, 2); break;
            default: TILE(type, 1); break;
            }
        }
    }
}

void r16_groups_avx512(const struct matmul_args *m, int64_t g0, int64_t g1) {
    switch (m->w->type) {
    case GGML_TYPE_Q8_0: r16_groups_type(GGML_TYPE_Q8_0, m, g0, g1); break;
    case GGML_TYPE_Q4_0: r16_groups_type(GGML_TYPE_Q4_0, m, g0, g1); break;
    case GGML_TYPE_Q4_1: r16_groups_type(GGML_TYPE_Q4_1, m, g0, g1); break;
    case GGML_TYPE_Q5_0: r16_groups_type(GGML_TYPE_Q5_0, m, g0, g1); break;
    case GGML_TYPE_Q5_1: r16_groups_type(GGML_TYPE_Q5_1, m, g0, g1); break;
    default: break;
    }
}

#endif
