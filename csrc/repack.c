/* The R16 weight layout: 16 rows interleaved, so a vector lane holds one row (see repack.h). */
#include "repack.h"

#include <errno.h>
#include <string.h>

#include "edgelm_ops.h"

#include "fp16.h"

static void put16(uint8_t *dst, int r, uint16_t v) { memcpy(dst + 2 * r, &v, sizeof v); }

int r16_has_layout(int type) {
    switch (type) {
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q6_K: return 1;
    default: return 0;
    }
}

size_t r16_row_bytes(int type, int64_t k) {
    const int bs = ggml_block_size(type);
    if (bs == 0) return 0;
    const size_t blocks = (size_t)(k / bs);
    if (type == GGML_TYPE_Q4_K) return blocks * (R16_Q4_K_BYTES / R16_ROWS);
    return blocks * ggml_type_size(type);
}

/* One Q4_K super-block of 16 rows, `stride` bytes apart. */
static void repack_q4_K(const uint8_t *src, size_t stride, uint8_t *dst) {
    uint8_t *scales = dst + 64, *mins = dst + 64 + 128, *qs = dst + 64 + 128 + 128;
    for (int r = 0; r < R16_ROWS; r++) {
        const block_q4_K *b = (const block_q4_K *)(src + r * stride);
        put16(dst, r, b->d);
        put16(dst + 32, r, b->dmin);
        uint8_t sm[16];
        k_scales_mins(b->scales, sm);
        for (int j = 0; j < 8; j++) scales[j * R16_ROWS + r] = sm[j];
        for (int p = 0; p < 4; p++) {
            mins[p * 32 + 2 * r] = sm[8 + 2 * p];
            mins[p * 32 + 2 * r + 1] = sm[8 + 2 * p + 1];
        }
        for (int p = 0; p < 4; p++)
            for (int v = 0; v < 8; v++) memcpy(qs + (p * 8 + v) * R16_VECTOR_BYTES + 4 * r, b->qs + 32 * p + 4 * v, 4);
    }
}

/* The 6-bit values (0..63) of a Q6_K block's 256 weights; a weight is d * scale * (q - 32). */
static void q6_K_values(const block_q6_K *b, uint8_t q[QK_K]) {
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        uint8_t *out = q + 128 * half;
        for (int l = 0; l < 32; l++) {
            out[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
            out[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
            out[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            out[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
    }
}

/* One Q6_K super-block of 16 rows, `stride` bytes apart. */
static void repack_q6_K(const uint8_t *src, size_t stride, uint8_t *dst) {
    uint8_t *scales = dst + 32, *out = dst + 32 + 256;
    for (int r = 0; r < R16_ROWS; r++) {
        const block_q6_K *b = (const block_q6_K *)(src + r * stride);
        put16(dst, r, b->d);
        for (int p = 0; p < 8; p++) {
            scales[p * 32 + 2 * r] = (uint8_t)b->scales[2 * p];
            scales[p * 32 + 2 * r + 1] = (uint8_t)b->scales[2 * p + 1];
        }
        uint8_t q[QK_K];
        q6_K_values(b, q);
        for (int p = 0; p < 8; p++) {
            const uint8_t *w = q + 32 * p;
            uint8_t *nib = out + p * 6 * R16_VECTOR_BYTES, *high = nib + 4 * R16_VECTOR_BYTES;
            for (int v = 0; v < 4; v++)
                for (int i = 0; i < 4; i++)
                    nib[v * R16_VECTOR_BYTES + 4 * r + i] = (uint8_t)((w[4 * v + i] & 0xF) | (w[16 + 4 * v + i] & 0xF) << 4);
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < 4; i++) {
                    int bits = 0;
                    for (int sh = 0; sh < 4; sh++) bits |= (w[16 * h + 4 * sh + i] >> 4) << (2 * sh);
                    high[h * R16_VECTOR_BYTES + 4 * r + i] = (uint8_t)bits;
                }
        }
    }
}

/* Q4_x / Q5_x nibbles: vector p (p < 4), lane r = bytes 4p .. 4p+3 of row r's 16 packed bytes. */
static void put_nibbles(uint8_t *dst, int r, const uint8_t *qs) {
    for (int p = 0; p < R16_NIBBLE_VECTORS; p++) memcpy(dst + p * R16_VECTOR_BYTES + 4 * r, qs + 4 * p, 4);
}

/* Q5_x high bits: byte i of lane r holds at bit c the high bit of weight 4c + i of row r. */
static void put_high_bits(uint8_t *dst, int r, const uint8_t qh_bytes[4]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int i = 0; i < 4; i++) {
        uint8_t bits = 0;
        for (int c = 0; c < R16_CHUNKS; c++) bits |= (uint8_t)(((qh >> (4 * c + i)) & 1) << c);
        dst[4 * r + i] = bits;
    }
}

/* One block (32 weights) of 16 rows, `stride` bytes apart, into dst (16 * type_size bytes). */
static void repack_block32(int type, const uint8_t *src, size_t stride, uint8_t *dst) {
    const size_t scales = R16_ROWS * sizeof(ggml_half);
    switch (type) {
    case GGML_TYPE_Q8_0:
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q8_0 *b = (const block_q8_0 *)(src + r * stride);
            put16(dst, r, b->d);
            for (int c = 0; c < R16_CHUNKS; c++) {
                uint32_t q;
                memcpy(&q, b->qs + 4 * c, sizeof q);
                q ^= 0x80808080u; /* unsigned: q + 128 */
                memcpy(dst + scales + c * R16_VECTOR_BYTES + 4 * r, &q, sizeof q);
            }
        }
        break;
    case GGML_TYPE_Q4_0:
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q4_0 *b = (const block_q4_0 *)(src + r * stride);
            put16(dst, r, b->d);
            put_nibbles(dst + scales, r, b->qs);
        }
        break;
    case GGML_TYPE_Q4_1:
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q4_1 *b = (const block_q4_1 *)(src + r * stride);
            put16(dst, r, b->d);
            put16(dst + scales, r, b->m);
            put_nibbles(dst + 2 * scales, r, b->qs);
        }
        break;
    case GGML_TYPE_Q5_0:
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q5_0 *b = (const block_q5_0 *)(src + r * stride);
            put16(dst, r, b->d);
            put_high_bits(dst + scales, r, b->qh);
            put_nibbles(dst + scales + R16_HIGH_BYTES, r, b->qs);
        }
        break;
    case GGML_TYPE_Q5_1:
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q5_1 *b = (const block_q5_1 *)(src + r * stride);
            put16(dst, r, b->d);
            put16(dst + scales, r, b->m);
            put_high_bits(dst + 2 * scales, r, b->qh);
            put_nibbles(dst + 2 * scales + R16_HIGH_BYTES, r, b->qs);
        }
        break;
    default: break;
    }
}

struct repack_task {
    int type;
    const uint8_t *src;
    uint8_t *dst;
    int64_t n_rows, k, g0, g1, per_chunk;
};

static void repack_chunk(void *ctx, long long chunk, int ith) {
    const struct repack_task *t = ctx;
    (void)ith;
    const int64_t g0 = t->g0 + chunk * t->per_chunk;
    const int64_t g1 = g0 + t->per_chunk < t->g1 ? g0 + t->per_chunk : t->g1;
    r16_repack(t->type, t->src, t->dst, t->n_rows, t->k, g0, g1);
}

int edgelm_repack_r16(const struct edgelm_ctx *ctx, int type, const uint8_t *src, uint8_t *dst, int64_t n_rows,
                      int64_t k, int64_t g0, int64_t g1) {
    const int bs = ggml_block_size(type);
    if (!r16_has_layout(type) || bs == 0 || k % bs || n_rows % R16_ROWS || g0 < 0 || g0 > g1 ||
        g1 > n_rows / R16_ROWS)
        return EINVAL;
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct repack_task t = {type, src, dst, n_rows, k, g0, g1, 0};
    t.per_chunk = chunk_size(g1 - g0, ex.n_threads, 1);
    exec_run_chunks(&ex, repack_chunk, &t, (g1 - g0 + t.per_chunk - 1) / t.per_chunk, ex.n_threads);
    exec_end(&ex);
    return 0;
}

int r16_repack(int type, const uint8_t *src, uint8_t *dst, int64_t n_rows, int64_t k, int64_t g0, int64_t g1) {
    const int bs = ggml_block_size(type);
    if (!r16_has_layout(type) || bs == 0 || k % bs || n_rows % R16_ROWS || g0 < 0 || g1 > n_rows / R16_ROWS)
        return -1;
    const size_t ts = ggml_type_size(type), row_bytes = (size_t)(k / bs) * ts;
    const size_t packed_row = r16_row_bytes(type, k);
    const size_t block_bytes = R16_ROWS * packed_row / (size_t)(k / bs); /* one block of 16 rows */
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *rows = src + (size_t)g * R16_ROWS * row_bytes;
        uint8_t *out = dst + (size_t)g * R16_ROWS * packed_row;
        for (int64_t b = 0; b < k / bs; b++) {
            if (type == GGML_TYPE_Q4_K) repack_q4_K(rows + b * ts, row_bytes, out + b * block_bytes);
            else if (type == GGML_TYPE_Q6_K) repack_q6_K(rows + b * ts, row_bytes, out + b * block_bytes);
            else repack_block32(type, rows + b * ts, row_bytes, out + b * block_bytes);
        }
    }
    return 0;
}
