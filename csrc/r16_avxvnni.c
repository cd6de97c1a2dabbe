/* Products with R16 weights (repack.h) in AVX2 with AVX-VNNI (Alder Lake, Gracemont, and later):
 * the AVX-512 kernels of r16_avx512.c in 256-bit vectors.
 *
 * A 64-byte R16 vector is two halves of 8 rows; a tile takes one half (8 rows, one per lane) and up
 * to four tokens, which keeps its sums in the 16 vector registers.  Per (row, token) the float
 * operations are those of the AVX-512 kernel: products agree across the two ISAs to rounding, and
 * within this one a token gets the same numbers alone or batched.
 *
 * Built twice: as is, and (R16_GFNI, from r16_avxvnni_gfni.c) for CPUs with GFNI, where affine byte
 * maps move nibbles and high bits into place one op at a time (a shift and a mask otherwise). */
#if defined(__x86_64__) || defined(__i386__)
#ifdef R16_GFNI
#pragma GCC target("avx2,fma,f16c,avxvnni,gfni")
#define R16_GROUPS r16_groups_avxvnni_gfni
#else
#pragma GCC target("avx2,fma,f16c,avxvnni")
#define R16_GROUPS r16_groups_avxvnni
#endif
#include <immintrin.h>
#include <string.h>

#include "isa_kernels.h"
#include "repack.h"

#define INLINE static inline __attribute__((always_inline))
#define NT_MAX 4 /* tokens per tile */
#define HALF_ROWS 8
#define HALF_BYTES 32 /* one half of a 64-byte vector */
#define PREFETCH_AHEAD 4096

INLINE size_t block_bytes(int type) {
    switch (type) {
    case GGML_TYPE_Q4_0: return sizeof(block_q4_0);
    case GGML_TYPE_Q4_1: return sizeof(block_q4_1);
    case GGML_TYPE_Q5_0: return sizeof(block_q5_0);
    case GGML_TYPE_Q5_1: return sizeof(block_q5_1);
    default: return sizeof(block_q8_0);
    }
}

INLINE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

INLINE __m256i load_half(const uint8_t *vector, int h) { return _mm256_loadu_si256((const __m256i *)(vector + HALF_BYTES * h)); }

/* 8 f16 values (a half of 16) as floats. */
INLINE __m256 half_f16(const uint8_t *p, int h) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * h))); }

/* Each byte's high nibble as a byte of its own (0..15). */
INLINE __m256i high_nibbles(const __m256i v, const __m256i low4) {
#ifdef R16_GFNI
    (void)low4;
    return _mm256_gf2p8affine_epi64_epi8(v, _mm256_set1_epi64x(R16_GF2_NIBBLE_DOWN), 0);
#else
    return _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
#endif
}

/* Bit c of each byte of hb alone, at bit 4: the high bits of Q5 chunk c (bit4 = 0x10 in each byte). */
INLINE __m256i q5_bit(const __m256i hb, const int c, const __m256i bit4) {
#ifdef R16_GFNI
    (void)bit4;
    return _mm256_gf2p8affine_epi64_epi8(hb, _mm256_set1_epi64x(R16_GF2_BIT_TO_4(c)), 0);
#else
    /* 16-bit shifts: bit 4 of either byte only ever comes from its own byte */
    const __m256i moved = c < 4 ? _mm256_slli_epi16(hb, 4 - c) : c == 4 ? hb : _mm256_srli_epi16(hb, c - 4);
    return _mm256_and_si256(moved, bit4);
#endif
}

/* Bits 2s, 2s+1 of each byte of hb alone, at bits 4, 5: Q6_K's top bits of chunk s of 4 (top2 = 0x30). */
INLINE __m256i q6_bits(const __m256i hb, const int s, const __m256i top2) {
#ifdef R16_GFNI
    (void)top2;
    return _mm256_gf2p8affine_epi64_epi8(hb, _mm256_set1_epi64x(R16_GF2_BITS_TO_45(s)), 0);
#else
    const __m256i moved = s == 0 ? _mm256_slli_epi16(hb, 4) : s == 1 ? _mm256_slli_epi16(hb, 2) : s == 2 ? hb : _mm256_srli_epi16(hb, 2);
    return _mm256_and_si256(moved, top2);
#endif
}

/* The 8 chunk vectors of half h of one block, as unsigned bytes. */
INLINE void block_chunks(const int type, const uint8_t *q, int h, __m256i w[R16_CHUNKS]) {
    if (type == GGML_TYPE_Q8_0) {
        for (int c = 0; c < R16_CHUNKS; c++) w[c] = load_half(q + c * R16_VECTOR_BYTES, h);
        return;
    }
    const int high = type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q5_1;
    const uint8_t *nib = q + (high ? R16_HIGH_BYTES : 0);
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    for (int p = 0; p < R16_NIBBLE_VECTORS; p++) {
        const __m256i v = load_half(nib + p * R16_VECTOR_BYTES, h);
        w[p] = _mm256_and_si256(v, low4);
        w[p + R16_NIBBLE_VECTORS] = high_nibbles(v, low4);
    }
    if (high) { /* bit c of each byte to bit 4, or-ed in */
        const __m256i bit4 = _mm256_set1_epi8(0x10), hb = load_half(q, h);
        for (int c = 0; c < R16_CHUNKS; c++) w[c] = _mm256_or_si256(w[c], q5_bit(hb, c, bit4));
    }
}

/* Half h of a group (8 rows) x nt tokens from t0, into y + t * y_stride (8 floats per token). */
INLINE void tile_block32(const int type, const uint8_t *grp, int h, const struct act *a, int64_t t0, const int nt,
                         float *y, int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const size_t bb = R16_ROWS * block_bytes(type);
    const int with_min = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const int32_t offset = type == GGML_TYPE_Q4_0 ? -8 : type == GGML_TYPE_Q5_0 ? -16 : -128;
    const size_t heads = (with_min ? 2 : 1) * R16_ROWS * sizeof(ggml_half);
    __m256 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb;
        for (size_t off = 0; off < bb; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const __m256 d = half_f16(blk, h);
        const __m256 m = with_min ? half_f16(blk + heads / 2, h) : _mm256_setzero_ps();
        __m256i w[R16_CHUNKS];
        block_chunks(type, blk + heads, h, w);
        for (int j = 0; j < nt; j++) {
            const int8_t *x = a->q + (t0 + j) * k + b * QK;
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            for (int c = 0; c < R16_CHUNKS; c += 2) {
                s0 = _mm256_dpbusd_avx_epi32(s0, w[c], bcast4(x + 4 * c));
                s1 = _mm256_dpbusd_avx_epi32(s1, w[c + 1], bcast4(x + 4 * c + 4));
            }
            const __m256i s = _mm256_add_epi32(s0, s1);
            const int64_t at = (t0 + j) * nb + b;
            const __m256 ddx = _mm256_mul_ps(d, _mm256_set1_ps(a->d[at]));
            if (with_min) {
                const __m256 blk_sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), ddx, _mm256_mul_ps(m, _mm256_set1_ps(a->s[at])));
                acc[j] = _mm256_add_ps(acc[j], blk_sum);
            } else {
                const __m256i exact = _mm256_add_epi32(s, _mm256_set1_epi32(offset * a->qsum[at]));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), ddx, acc[j]);
            }
        }
    }
    for (int j = 0; j < nt; j++) _mm256_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

/* One token, both halves of a group in one pass (decode): the group is read once, each activation
 * broadcast once.  Per (row, token) the operations of tile_block32. */
INLINE void stream_block32(const int type, const uint8_t *grp, const struct act *a, int64_t t, float *y) {
    const int64_t nb = a->n_blocks, k = a->k;
    const size_t bb = R16_ROWS * block_bytes(type);
    const int with_min = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const int high = type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q5_1;
    const int32_t offset = type == GGML_TYPE_Q4_0 ? -8 : type == GGML_TYPE_Q5_0 ? -16 : -128;
    const size_t heads = (with_min ? 2 : 1) * R16_ROWS * sizeof(ggml_half);
    const __m256i low4 = _mm256_set1_epi8(0x0F), bit4 = _mm256_set1_epi8(0x10);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * bb, *q = blk + heads;
        for (size_t off = 0; off < bb; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const int8_t *x = a->q + t * k + b * QK;
        __m256i s[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        if (type == GGML_TYPE_Q8_0) {
            for (int c = 0; c < R16_CHUNKS; c++) {
                const __m256i xc = bcast4(x + 4 * c);
                for (int h = 0; h < 2; h++) s[h] = _mm256_dpbusd_avx_epi32(s[h], load_half(q + c * R16_VECTOR_BYTES, h), xc);
            }
        } else {
            const uint8_t *nib = q + (high ? R16_HIGH_BYTES : 0);
            for (int p = 0; p < R16_NIBBLE_VECTORS; p++) {
                const __m256i x_lo = bcast4(x + 4 * p), x_hi = bcast4(x + 4 * (p + R16_NIBBLE_VECTORS));
                for (int h = 0; h < 2; h++) {
                    const __m256i v = load_half(nib + p * R16_VECTOR_BYTES, h);
                    __m256i lo = _mm256_and_si256(v, low4), hi = high_nibbles(v, low4);
                    if (high) { /* bit p (chunk p) and bit p+4 (chunk p+4) of each byte to bit 4 */
                        const __m256i hb = load_half(q, h);
                        lo = _mm256_or_si256(lo, q5_bit(hb, p, bit4));
                        hi = _mm256_or_si256(hi, q5_bit(hb, p + 4, bit4));
                    }
                    s[h] = _mm256_dpbusd_avx_epi32(s[h], lo, x_lo);
                    s[h] = _mm256_dpbusd_avx_epi32(s[h], hi, x_hi);
                }
            }
        }
        const int64_t at = t * nb + b;
        for (int h = 0; h < 2; h++) {
            const __m256 ddx = _mm256_mul_ps(half_f16(blk, h), _mm256_set1_ps(a->d[at]));
            if (with_min) {
                const __m256 m = _mm256_mul_ps(half_f16(blk + heads / 2, h), _mm256_set1_ps(a->s[at]));
                acc[h] = _mm256_add_ps(acc[h], _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[h]), ddx, m));
            } else {
                const __m256i exact = _mm256_add_epi32(s[h], _mm256_set1_epi32(offset * a->qsum[at]));
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), ddx, acc[h]);
            }
        }
    }
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + HALF_ROWS, acc[1]);
}

/* Sum over 8 chunk vectors w[0..7] (32 weights of 8 rows) against x[0..31]. */
INLINE __m256i dot32(const __m256i *w, const int8_t *x) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = 0; c < R16_CHUNKS; c += 2) {
        s0 = _mm256_dpbusd_avx_epi32(s0, w[c], bcast4(x + 4 * c));
        s1 = _mm256_dpbusd_avx_epi32(s1, w[c + 1], bcast4(x + 4 * c + 4));
    }
    return _mm256_add_epi32(s0, s1);
}

INLINE void tile_q4_K(const uint8_t *grp, int h, const struct act *a, int64_t t0, const int nt, float *y,
                      int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q4_K_BYTES;
        for (size_t off = 0; off < R16_Q4_K_BYTES; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const uint8_t *scales = blk + 64, *mins = scales + 128, *qs = mins + 128;
        __m256i isum[NT_MAX], msum[NT_MAX];
        for (int j = 0; j < nt; j++) isum[j] = msum[j] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            __m256i lo[R16_CHUNKS], hi[R16_CHUNKS];
            for (int v = 0; v < R16_CHUNKS; v++) {
                const __m256i q = load_half(qs + (p * R16_CHUNKS + v) * R16_VECTOR_BYTES, h);
                lo[v] = _mm256_and_si256(q, low4);
                hi[v] = high_nibbles(q, low4);
            }
            int64_t sl, sh;
            memcpy(&sl, scales + 2 * p * R16_ROWS + HALF_ROWS * h, sizeof sl);
            memcpy(&sh, scales + (2 * p + 1) * R16_ROWS + HALF_ROWS * h, sizeof sh);
            const __m256i sc_lo = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sl)), sc_hi = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sh));
            const __m256i min_pair = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(mins + 32 * p + 16 * h)));
            for (int j = 0; j < nt; j++) {
                const int8_t *x = a->q + (t0 + j) * k + b * QK_K + 64 * p;
                const __m256i s = _mm256_add_epi32(_mm256_mullo_epi32(dot32(lo, x), sc_lo), _mm256_mullo_epi32(dot32(hi, x + 32), sc_hi));
                isum[j] = _mm256_add_epi32(isum[j], s);
                const int16_t *bs = a->bsums + (t0 + j) * (k / 16) + b * QK_K_SUB16 + 4 * p;
                const uint32_t pair = (uint16_t)(bs[0] + bs[1]) | (uint32_t)(uint16_t)(bs[2] + bs[3]) << 16;
                msum[j] = _mm256_dpwssd_avx_epi32(msum[j], min_pair, _mm256_set1_epi32((int)pair));
            }
        }
        const __m256 d = half_f16(blk, h), dmin = half_f16(blk + 32, h);
        for (int j = 0; j < nt; j++) {
            const __m256 dx = _mm256_set1_ps(a->d[(t0 + j) * nb + b]);
            const __m256 mn = _mm256_mul_ps(_mm256_cvtepi32_ps(msum[j]), _mm256_mul_ps(dmin, dx));
            acc[j] = _mm256_add_ps(acc[j], _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum[j]), _mm256_mul_ps(d, dx), mn));
        }
    }
    for (int j = 0; j < nt; j++) _mm256_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

INLINE void tile_q6_K(const uint8_t *grp, int h, const struct act *a, int64_t t0, const int nt, float *y,
                      int64_t y_stride) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m256i low4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
    __m256 acc[NT_MAX];
    for (int j = 0; j < nt; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q6_K_BYTES;
        for (size_t off = 0; off < R16_Q6_K_BYTES; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const uint8_t *scales = blk + 32, *qv = scales + 256;
        __m256i isum[NT_MAX], osum[NT_MAX];
        for (int j = 0; j < nt; j++) isum[j] = osum[j] = _mm256_setzero_si256();
        for (int p = 0; p < 8; p++) {
            const uint8_t *nib = qv + p * 6 * R16_VECTOR_BYTES, *high = nib + 4 * R16_VECTOR_BYTES;
            __m256i w[R16_CHUNKS];
            for (int v = 0; v < 4; v++) {
                const __m256i q = load_half(nib + v * R16_VECTOR_BYTES, h);
                w[v] = _mm256_and_si256(q, low4);
                w[v + 4] = high_nibbles(q, low4);
            }
            for (int g = 0; g < 2; g++) {
                const __m256i hb = load_half(high + g * R16_VECTOR_BYTES, h);
                for (int c = 0; c < 4; c++) w[4 * g + c] = _mm256_or_si256(w[4 * g + c], q6_bits(hb, c, top2));
            }
            const __m256i pair = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(scales + 32 * p + 16 * h)));
            const __m256i sc_a = _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16), sc_b = _mm256_srai_epi32(pair, 16);
            for (int j = 0; j < nt; j++) {
                const int8_t *x = a->q + (t0 + j) * k + b * QK_K + 32 * p;
                __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
                for (int c = 0; c < 4; c++) {
                    s0 = _mm256_dpbusd_avx_epi32(s0, w[c], bcast4(x + 4 * c));
                    s1 = _mm256_dpbusd_avx_epi32(s1, w[c + 4], bcast4(x + 16 + 4 * c));
                }
                isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(_mm256_mullo_epi32(s0, sc_a), _mm256_mullo_epi32(s1, sc_b)));
                int32_t bs_pair;
                memcpy(&bs_pair, a->bsums + (t0 + j) * (k / 16) + b * QK_K_SUB16 + 2 * p, sizeof bs_pair);
                osum[j] = _mm256_dpwssd_avx_epi32(osum[j], pair, _mm256_set1_epi32(bs_pair));
            }
        }
        const __m256 d = half_f16(blk, h);
        for (int j = 0; j < nt; j++) {
            const __m256i total = _mm256_sub_epi32(isum[j], _mm256_slli_epi32(osum[j], 5));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(a->d[(t0 + j) * nb + b])),
                                     acc[j]);
        }
    }
    for (int j = 0; j < nt; j++) _mm256_storeu_ps(y + (t0 + j) * y_stride, acc[j]);
}

/* One token, both halves in one pass (decode), for the K-quants: the operations of tile_q4_K and
 * tile_q6_K per (row, token). */
INLINE void stream_q4_K(const uint8_t *grp, const struct act *a, int64_t t, float *y) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q4_K_BYTES;
        for (size_t off = 0; off < R16_Q4_K_BYTES; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const uint8_t *scales = blk + 64, *mins = scales + 128, *qs = mins + 128;
        const int16_t *bs = a->bsums + t * (k / 16) + b * QK_K_SUB16;
        __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256i msum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int p = 0; p < 4; p++) {
            const int8_t *x = a->q + t * k + b * QK_K + 64 * p;
            __m256i s_lo[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            __m256i s_hi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int v = 0; v < R16_CHUNKS; v++) {
                const __m256i x_lo = bcast4(x + 4 * v), x_hi = bcast4(x + 32 + 4 * v);
                for (int h = 0; h < 2; h++) {
                    const __m256i q = load_half(qs + (p * R16_CHUNKS + v) * R16_VECTOR_BYTES, h);
                    s_lo[h] = _mm256_dpbusd_avx_epi32(s_lo[h], _mm256_and_si256(q, low4), x_lo);
                    s_hi[h] = _mm256_dpbusd_avx_epi32(s_hi[h], high_nibbles(q, low4), x_hi);
                }
            }
            const uint32_t pair = (uint16_t)(bs[4 * p] + bs[4 * p + 1]) | (uint32_t)(uint16_t)(bs[4 * p + 2] + bs[4 * p + 3]) << 16;
            for (int h = 0; h < 2; h++) {
                int64_t sl, sh;
                memcpy(&sl, scales + 2 * p * R16_ROWS + HALF_ROWS * h, sizeof sl);
                memcpy(&sh, scales + (2 * p + 1) * R16_ROWS + HALF_ROWS * h, sizeof sh);
                const __m256i s = _mm256_add_epi32(_mm256_mullo_epi32(s_lo[h], _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sl))),
                                                   _mm256_mullo_epi32(s_hi[h], _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sh))));
                isum[h] = _mm256_add_epi32(isum[h], s);
                const __m256i min_pair = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(mins + 32 * p + 16 * h)));
                msum[h] = _mm256_dpwssd_avx_epi32(msum[h], min_pair, _mm256_set1_epi32((int)pair));
            }
        }
        const __m256 dx = _mm256_set1_ps(a->d[t * nb + b]);
        for (int h = 0; h < 2; h++) {
            const __m256 mn = _mm256_mul_ps(_mm256_cvtepi32_ps(msum[h]), _mm256_mul_ps(half_f16(blk + 32, h), dx));
            acc[h] = _mm256_add_ps(acc[h], _mm256_fmsub_ps(_mm256_cvtepi32_ps(isum[h]), _mm256_mul_ps(half_f16(blk, h), dx), mn));
        }
    }
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + HALF_ROWS, acc[1]);
}

INLINE void stream_q6_K(const uint8_t *grp, const struct act *a, int64_t t, float *y) {
    const int64_t nb = a->n_blocks, k = a->k;
    const __m256i low4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * R16_Q6_K_BYTES;
        for (size_t off = 0; off < R16_Q6_K_BYTES; off += CACHE_LINE) _mm_prefetch((const char *)(blk + PREFETCH_AHEAD + off), _MM_HINT_T0);
        const uint8_t *scales = blk + 32, *qv = scales + 256;
        const int16_t *bs = a->bsums + t * (k / 16) + b * QK_K_SUB16;
        __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256i osum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int p = 0; p < 8; p++) {
            const uint8_t *nib = qv + p * 6 * R16_VECTOR_BYTES, *high = nib + 4 * R16_VECTOR_BYTES;
            const int8_t *x = a->q + t * k + b * QK_K + 32 * p;
            __m256i s_a[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            __m256i s_b[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
            for (int v = 0; v < 4; v++) {
                const __m256i x_a = bcast4(x + 4 * v), x_b = bcast4(x + 16 + 4 * v);
                for (int h = 0; h < 2; h++) {
                    const __m256i q = load_half(nib + v * R16_VECTOR_BYTES, h);
                    const __m256i wa = _mm256_or_si256(_mm256_and_si256(q, low4), q6_bits(load_half(high, h), v, top2));
                    const __m256i wb = _mm256_or_si256(high_nibbles(q, low4),
                                                       q6_bits(load_half(high + R16_VECTOR_BYTES, h), v, top2));
                    s_a[h] = _mm256_dpbusd_avx_epi32(s_a[h], wa, x_a);
                    s_b[h] = _mm256_dpbusd_avx_epi32(s_b[h], wb, x_b);
                }
            }
            int32_t bs_pair;
            memcpy(&bs_pair, bs + 2 * p, sizeof bs_pair);
            for (int h = 0; h < 2; h++) {
                const __m256i pair = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(scales + 32 * p + 16 * h)));
                const __m256i sc_a = _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16), sc_b = _mm256_srai_epi32(pair, 16);
                isum[h] = _mm256_add_epi32(isum[h], _mm256_add_epi32(_mm256_mullo_epi32(s_a[h], sc_a), _mm256_mullo_epi32(s_b[h], sc_b)));
                osum[h] = _mm256_dpwssd_avx_epi32(osum[h], pair, _mm256_set1_epi32(bs_pair));
            }
        }
        const __m256 dx = _mm256_set1_ps(a->d[t * nb + b]);
        for (int h = 0; h < 2; h++) {
            const __m256i total = _mm256_sub_epi32(isum[h], _mm256_slli_epi32(osum[h], 5));
            acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(half_f16(blk, h), dx), acc[h]);
        }
    }
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + HALF_ROWS, acc[1]);
}

INLINE void tile_any(const int type, const uint8_t *grp, int h, const struct act *a, int64_t t0, const int nt,
                     float *y, int64_t y_stride) {
    if (type == GGML_TYPE_Q4_K) tile_q4_K(grp, h, a, t0, nt, y, y_stride);
    else if (type == GGML_TYPE_Q6_K) tile_q6_K(grp, h, a, t0, nt, y, y_stride);
    else tile_block32(type, grp, h, a, t0, nt, y, y_stride);
}

#define TILE(T, NT) tile_any(T, grp, h, a, t0, NT, y + HALF_ROWS * h, m->y_stride)

INLINE void groups_type(const int type, const struct matmul_args *m, int64_t g0, int64_t g1) {
    const struct act *a = m->a;
    const size_t group_bytes = R16_ROWS * m->w->row_bytes;
    for (int64_t t0 = 0; t0 < a->n_tok; t0 += NT_MAX) {
        const int nt = a->n_tok - t0 < NT_MAX ? (int)(a->n_tok - t0) : NT_MAX;
        for (int64_t g = g0; g < g1; g++) {
            const uint8_t *grp = m->w->data + g * group_bytes;
            float *y = m->y + g * R16_ROWS;
            if (nt == 1) { /* decode: the group in one pass */
                float *yt = y + t0 * m->y_stride;
                if (type == GGML_TYPE_Q4_K) stream_q4_K(grp, a, t0, yt);
                else if (type == GGML_TYPE_Q6_K) stream_q6_K(grp, a, t0, yt);
                else stream_block32(type, grp, a, t0, yt);
                continue;
            }
            for (int h = 0; h < 2; h++) {
                switch (nt) {
                case 4: TILE(type, 4); break;
                case 3: TILE(type, 3); break;
                case 2: TILE(type, 2); break;
                default: TILE(type, 1); break;
                }
            }
        }
    }
}

void R16_GROUPS(const struct matmul_args *m, int64_t g0, int64_t g1) {
    switch (m->w->type) {
    case GGML_TYPE_Q8_0: groups_type(GGML_TYPE_Q8_0, m, g0, g1); break;
    case GGML_TYPE_Q4_0: groups_type(GGML_TYPE_Q4_0, m, g0, g1); break;
    case GGML_TYPE_Q4_1: groups_type(GGML_TYPE_Q4_1, m, g0, g1); break;
    case GGML_TYPE_Q5_0: groups_type(GGML_TYPE_Q5_0, m, g0, g1); break;
    case GGML_TYPE_Q5_1: groups_type(GGML_TYPE_Q5_1, m, g0, g1); break;
    case GGML_TYPE_Q4_K: groups_type(GGML_TYPE_Q4_K, m, g0, g1); break;
    case GGML_TYPE_Q6_K: groups_type(GGML_TYPE_Q6_K, m, g0, g1); break;
    default: break;
    }
}

#endif
