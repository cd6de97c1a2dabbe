/* Products with R16 weights (repack.h) in AVX-512 VNNI: one row per 32-bit lane.
 *
 * A block of 16 rows is 8 chunk vectors; each meets the 4 activations of its chunk, broadcast, in a
 * vpdpbusd: 16 rows x 4 weights per instruction, no unpacking for Q8_0, a mask and a shift for the
 * nibbles.  The block's 16 scales come with one load and scale 16 integer sums at once; results are
 * stored 16 rows at a time.  The same tile serves one token (decode) and many (prefill, 8 tokens per
 * tile with the group's weights in L2), and every (row, token) result goes through the same float
 * operations whatever the tile, so a sequence gets the same numbers alone or batched.
 *
 * Built twice: as is, and (R16_GFNI, from r16_avx512_gfni.c) for CPUs with GFNI, where one affine
 * byte map brings a byte's high nibble down instead of a shift and a mask. */
#if defined(__x86_64__) || defined(__i386__)
#ifdef R16_GFNI
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2,gfni")
#define R16_GROUPS r16_groups_avx512_gfni
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")
#define R16_GROUPS r16_groups_avx512
#endif
#include <immintrin.h>
#include <string.h>

#include "isa_kernels.h"
#include "repack.h"

#define INLINE static inline __attribute__((always_inline))
#define NT_MAX 8 /* tokens per tile */
/* Software prefetch two pages ahead into L2: with base pages the hardware prefetchers stop at each page's
 * end.  Measured on Qwen2.5-0.5B shapes (all matrices of a decode step, 2 threads): 8 KiB into L2 streams
 * ~5% more than 4 KiB into L1 (Q8_0 23.6 -> 24.9 GB/s, Q4_K_M 20.9 -> 21.8); on the 256-bit path it does
 * not pay, which keeps 4 KiB into L1. */
#define PREFETCH_AHEAD 8192
#define PREFETCH_HINT _MM_HINT_T1

INLINE size_t block_bytes(int type) {
    switch (type) {
    case GGML_TYPE_Q4_0: return sizeof(block_q4_0);
    case GGML_TYPE_Q4_1: return sizeof(block_q4_1);
    case GGML_TYPE_Q5_0: return sizeof(block_q5_0);
    case GGML_TYPE_Q5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q8_0);
    }
}

/* Each byte's high nibble as a byte of its own (0..15). */
INLINE __m512i high_nibbles(const __m512i v, const __m512i low4) {
#ifdef R16_GFNI
    (void)low4;
    return _mm512_gf2p8affine_epi64_epi8(v, _mm512_set1_epi64(R16_GF2_NIBBLE_DOWN), 0);
#else
    return _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
#endif
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
    const uint8_t *nib = q + (high ? R16_HIGH_BYTES : 0);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
#ifdef R16_GFNI
    if (high) {
        /* bit c of each byte of h alone at bit 4, or-ed into the nibble; the low nibble's mask and that
         * or in one op (0xEC: (a & c) | b) */
        const __m512i h = _mm512_loadu_si512(q);
        for (int p = 0; p < R16_NIBBLE_VECTORS; p++) {
            const __m512i v = _mm512_loadu_si512(nib + p * R16_VECTOR_BYTES);
            const __m512i lo = _mm512_gf2p8affine_epi64_epi8(h, _mm512_set1_epi64(R16_GF2_BIT_TO_4(p)), 0);
            const __m512i hi = _mm512_gf2p8affine_epi64_epi8(h, _mm512_set1_epi64(R16_GF2_BIT_TO_4(p + 4)), 0);
            w[p] = _mm512_ternarylogic_epi32(v, lo, low4, 0xEC);
            w[p + R16_NIBBLE_VECTORS] = _mm512_or_si512(high_nibbles(v, low4), hi);
        }
        return;
    }
#endif
    for (int p = 0; p < R16_NIBBLE_VECTORS; p++) {
        const __m512i v = _mm512_loadu_si512(nib + p * R16_VECTOR_BYTES);
        w[p] = _mm512_and_si512(v, low4);
        w[p + R16_NIBBLE_VECTORS] = high_nibbles(v, low4);
    }
    if (high) {
        /* bit c of each byte to bit 4 (16-bit shifts: bit 4 of either byte only ever comes from
         * its own byte), or-ed in: 0xF8 is a | (b & c) */
        const __m512i bit4 = _mm512_set1_epi8(0x10), h = _mm512_loadu_si512(q);
        w[0] = _mm512_ternarylogic_epi32(w[0], _mm512_slli_epi16(h, 4), bit4, 0xF8);
        w[1] = _mm512_ternarylogic_epi32(w[1], _mm512_slli_epi16(h, 3), bit4, 0xF8);
        w[2] = _mm512_ternarylogic_epi32(w[2], _mm512_slli_epi16(h, 2), bit4, 0xF8);
        w[3] = _mm512_ternarylogic_epi32(w[3], _mm512_slli_epi16(h, 1), bit4, 0xF8);
        w[4] = _mm512_ternarylogic_epi32(w[4], h, bit4, 0xF8);
        w[5] = _mm512_ternarylogic_epi32(w[5], _mm512_srli_epi16(h, 1), bit4, 0xF8);
        w[6] = _mm512_ternarylogic_epi32(w[6], _mm512_srli_epi16(h, 2), bit4, 0xF8);
        w[7] = _mm512_ternarylogic_epi32(w[7], _mm512_srli_epi16(h, 3), bit4, 0xF8);
    }
}

/* One group (16 rows) x nt tokens from t0, into y + t * y_stride (16 floats per token).
 *
 * Per block, as the reference's dot products: the integer sum with the weights' offset applied
 * exactly (through the activations' integer block sums), times d * dx; for Q4_1 / Q5_1, plus the
 * min times d * sum(x). */
INLINE void r16_tile(const int type, const uint8_t *grp, const struct act *a, int64_t t0, const int nt, float *y,
                     int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const size_t bb = R16_ROWS * block_bytes(type);
    const int with_min = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const int32_t offset = type == GGML_TYPE_Q4_0 ? -8 : type == GGML_TYPE_Q5_0 ? -16 : -128;
    const size_t heads = (with_min ? 2 : 1) * R16_ROWS * sizeof(ggml_half);
    __m512 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb;
        for (size_t off = 0; off < bb; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), PREFETCH_HINT);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 m = with_min ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + heads / 2)))
                                  : _mm512_setzero_ps();
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
            const __m512 ddx = _mm512_mul_ps(d, _mm512_set1_ps(a->d[at]));
            if (with_min) {
                const __m512 block = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[j]), ddx, _mm512_mul_ps(m, _mm512_set1_ps(a->s[at])));
                acc[j] = _mm512_add_ps(acc[j], block);
            } else {
                const __m512i exact = _mm512_add_epi32(s[j], _mm512_set1_epi32(offset * a->qsum[at]));
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(exact), ddx, acc[j]);
            }
        }
    }
    for (int j = 0; j < nt; j++) _mm512_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

/* ---- the K-quants: super-blocks of 256 weights, integer sub-block scales ---------------------------- */

/* Part `part` of `parts` of the bytes ahead of a super-block: spread over its computation, the prefetches
 * do not queue behind each other at its start. */
INLINE void prefetch_part(const uint8_t *blk, size_t bytes, int part, int parts) {
    const size_t lines = (bytes + CACHE_LINE - 1) / CACHE_LINE;
    const size_t l0 = lines * (size_t)part / (size_t)parts, l1 = lines * (size_t)(part + 1) / (size_t)parts;
    for (size_t l = l0; l < l1; l++) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + l * CACHE_LINE), PREFETCH_HINT);
}

/* Sum over 8 chunk vectors w[0..7] (32 weights of 16 rows) against x[0..31]: two chains when alone. */
INLINE __m512i dot32(const __m512i *w, const int8_t *x) {
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int c = 0; c < R16_CHUNKS; c += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[c], bcast4(x + 4 * c));
        s1 = _mm512_dpbusd_epi32(s1, w[c + 1], bcast4(x + 4 * c + 4));
    }
    return _mm512_add_epi32(s0, s1);
}

/* Q4_K: y = sum over super-blocks of d*dx * sum_j scale_j (q.x)_j - dmin*dx * sum_j min_j sum(x)_j. */
INLINE void r16_tile_q4_K(const uint8_t *grp, const struct act *a, int64_t t0, const int nt, float *y,
                          int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m512i low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8((char)0xF0);
    __m512 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q4_K_BYTES;
        const uint8_t *scales = blk + 64, *mins = scales + 128, *qs = mins + 128;
        __m512i isum[NT_MAX], msum[NT_MAX];
        for (int j = 0; j < nt; j++) isum[j] = msum[j] = _mm512_setzero_si512();
        for (int p = 0; p < 4; p++) {
            prefetch_part(blk, R16_Q4_K_BYTES, p, 4);
            __m512i lo[R16_CHUNKS], hi[R16_CHUNKS];
            for (int v = 0; v < R16_CHUNKS; v++) {
                const __m512i q = _mm512_loadu_si512(qs + (p * R16_CHUNKS + v) * R16_VECTOR_BYTES);
                lo[v] = _mm512_and_si512(q, low4);
                hi[v] = _mm512_and_si512(q, high4); /* 16 x the high nibble: one op, divided out below */
            }
            const __m512i sc_lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(scales + 2 * p * R16_ROWS)));
            const __m512i sc_hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(scales + (2 * p + 1) * R16_ROWS)));
            const __m512i min_pair = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(mins + 32 * p)));
            for (int j = 0; j < nt; j++) {
                const int8_t *x = a->q + (t0 + j) * k + b * QK_K + 64 * p;
                const __m512i s_hi = _mm512_srai_epi32(dot32(hi, x + 32), 4); /* exact: a multiple of 16 */
                const __m512i s = _mm512_add_epi32(_mm512_mullo_epi32(dot32(lo, x), sc_lo), _mm512_mullo_epi32(s_hi, sc_hi));
                isum[j] = _mm512_add_epi32(isum[j], s);
                /* the activation sums of sub-blocks 2p, 2p+1 (each two sums of 16), as an int16 pair */
                const int16_t *bs = a->bsums + (t0 + j) * (k / 16) + b * QK_K_SUB16 + 4 * p;
                const uint32_t pair = (uint16_t)(bs[0] + bs[1]) | (uint32_t)(uint16_t)(bs[2] + bs[3]) << 16;
                msum[j] = _mm512_dpwssd_epi32(msum[j], min_pair, _mm512_set1_epi32((int)pair));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(blk + 32)));
        for (int j = 0; j < nt; j++) { /* per super-block, as the reference: d*dx*isum - dmin*dx*msum */
            const __m512 dx = _mm512_set1_ps(a->d[(t0 + j) * nb + b]);
            const __m512 mins = _mm512_mul_ps(_mm512_cvtepi32_ps(msum[j]), _mm512_mul_ps(dmin, dx));
            acc[j] = _mm512_add_ps(acc[j], _mm512_fmsub_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(d, dx), mins));
        }
    }
    for (int j = 0; j < nt; j++) _mm512_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

/* Q6_K: y = sum over super-blocks of d*dx * sum_j scale_j ((q.x)_j - 32 sum(x)_j). */
INLINE void r16_tile_q6_K(const uint8_t *grp, const struct act *a, int64_t t0, const int nt, float *y,
                          int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
    __m512 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q6_K_BYTES;
        const uint8_t *scales = blk + 32, *qv = scales + 256;
        __m512i isum[NT_MAX], osum[NT_MAX];
        for (int j = 0; j < nt; j++) isum[j] = osum[j] = _mm512_setzero_si512();
        for (int p = 0; p < 8; p++) {
            prefetch_part(blk, R16_Q6_K_BYTES, p, 8);
            const uint8_t *nib = qv + p * 6 * R16_VECTOR_BYTES, *high = nib + 4 * R16_VECTOR_BYTES;
            __m512i w[R16_CHUNKS];
#ifdef R16_GFNI
            /* bits 2v, 2v+1 of each byte alone at bits 4, 5, or-ed into the nibbles; the low nibble's mask
             * and that or in one op (0xEC: (a & c) | b) */
            const __m512i hb0 = _mm512_loadu_si512(high), hb1 = _mm512_loadu_si512(high + R16_VECTOR_BYTES);
            for (int v = 0; v < 4; v++) {
                const __m512i q = _mm512_loadu_si512(nib + v * R16_VECTOR_BYTES);
                const __m512i top = _mm512_set1_epi64(R16_GF2_BITS_TO_45(v));
                w[v] = _mm512_ternarylogic_epi32(q, _mm512_gf2p8affine_epi64_epi8(hb0, top, 0), low4, 0xEC);
                w[v + 4] = _mm512_or_si512(high_nibbles(q, low4), _mm512_gf2p8affine_epi64_epi8(hb1, top, 0));
            }
            (void)top2;
#else
            for (int v = 0; v < 4; v++) {
                const __m512i q = _mm512_loadu_si512(nib + v * R16_VECTOR_BYTES);
                w[v] = _mm512_and_si512(q, low4);
                w[v + 4] = high_nibbles(q, low4);
            }
            for (int h = 0; h < 2; h++) {
                const __m512i hb = _mm512_loadu_si512(high + h * R16_VECTOR_BYTES);
                /* bits 2s, 2s+1 of each byte to bits 4, 5, or-ed into the low nibble (0xF8: a | (b & c)) */
                w[4 * h + 0] = _mm512_ternarylogic_epi32(w[4 * h + 0], _mm512_slli_epi16(hb, 4), top2, 0xF8);
                w[4 * h + 1] = _mm512_ternarylogic_epi32(w[4 * h + 1], _mm512_slli_epi16(hb, 2), top2, 0xF8);
                w[4 * h + 2] = _mm512_ternarylogic_epi32(w[4 * h + 2], hb, top2, 0xF8);
                w[4 * h + 3] = _mm512_ternarylogic_epi32(w[4 * h + 3], _mm512_srli_epi16(hb, 2), top2, 0xF8);
            }
#endif
            const __m512i pair = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(scales + 32 * p)));
            const __m512i sc_a = _mm512_srai_epi32(_mm512_slli_epi32(pair, 16), 16), sc_b = _mm512_srai_epi32(pair, 16);
            for (int j = 0; j < nt; j++) {
                const int8_t *x = a->q + (t0 + j) * k + b * QK_K + 32 * p;
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                for (int c = 0; c < 4; c++) {
                    s0 = _mm512_dpbusd_epi32(s0, w[c], bcast4(x + 4 * c));
                    s1 = _mm512_dpbusd_epi32(s1, w[c + 4], bcast4(x + 16 + 4 * c));
                }
                isum[j] = _mm512_add_epi32(isum[j], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc_a), _mm512_mullo_epi32(s1, sc_b)));
                int32_t bs_pair; /* the activation sums of sub-blocks 2p, 2p+1 */
                memcpy(&bs_pair, a->bsums + (t0 + j) * (k / 16) + b * QK_K_SUB16 + 2 * p, sizeof bs_pair);
                osum[j] = _mm512_dpwssd_epi32(osum[j], pair, _mm512_set1_epi32(bs_pair));
            }
        }
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
        for (int j = 0; j < nt; j++) {
            const __m512i total = _mm512_sub_epi32(isum[j], _mm512_slli_epi32(osum[j], 5)); /* -32 * offsets */
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(d, _mm512_set1_ps(a->d[(t0 + j) * nb + b])),
                                     acc[j]);
        }
    }
    for (int j = 0; j < nt; j++) _mm512_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

INLINE void tile_any(const int type, const uint8_t *grp, const struct act *a, int64_t t0, const int nt, float *y,
                     int64_t y_stride) {
    if (type == GGML_TYPE_Q4_K) r16_tile_q4_K(grp, a, t0, nt, y, y_stride);
    else if (type == GGML_TYPE_Q6_K) r16_tile_q6_K(grp, a, t0, nt, y, y_stride);
    else r16_tile(type, grp, a, t0, nt, y, y_stride);
}

#define TILE(T, NT) tile_any(T, grp, a, t0, NT, y, m->y_stride)

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

void R16_GROUPS(const struct matmul_args *m, int64_t g0, int64_t g1) {
    switch (m->w->type) {
    case GGML_TYPE_Q8_0: r16_groups_type(GGML_TYPE_Q8_0, m, g0, g1); break;
    case GGML_TYPE_Q4_0: r16_groups_type(GGML_TYPE_Q4_0, m, g0, g1); break;
    case GGML_TYPE_Q4_1: r16_groups_type(GGML_TYPE_Q4_1, m, g0, g1); break;
    case GGML_TYPE_Q5_0: r16_groups_type(GGML_TYPE_Q5_0, m, g0, g1); break;
    case GGML_TYPE_Q5_1: r16_groups_type(GGML_TYPE_Q5_1, m, g0, g1); break;
    case GGML_TYPE_Q4_K: r16_groups_type(GGML_TYPE_Q4_K, m, g0, g1); break;
    case GGML_TYPE_Q6_K: r16_groups_type(GGML_TYPE_Q6_K, m, g0, g1); break;
    default: break;
    }
}

#endif
