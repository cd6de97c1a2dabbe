/* The R16 weight layout: 16 rows interleaved, so a vector lane holds one row (see repack.h). */
#include "repack.h"

#include <errno.h>
#include <string.h>

#include "edgelm_ops.h"

#include "fp16.h"

int r16_has_layout(int type) {
    switch (type) {
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1: return 1;
    default: return 0;
    }
}

static void put16(uint8_t *dst, int r, uint16_t v) { memcpy(dst + 2 * r, &v, sizeof v); }

/* Q4_x / Q5_x nibbles: vector p (p < 4), lane r = bytes 4p .. 4p+3 of row r's 16 packed bytes. */
static void put_nibbles(uint8_t *dst, int r, const uint8_t *qs) {
    for (int p = 0; p < R16_NIBBLE_VECTORS; p++) memcpy(dst + p * R16_VECTOR_BYTES + 4 * r, qs + 4 * p, 4);
}

/* Q5_x high bits: the 64-bit mask of chunk c holds bit i of weight 4c + i of row r at bit 4r + i. */
static void put_high_bits(uint8_t *dst, int r, const uint8_t qh_bytes[4]) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int c = 0; c < R16_CHUNKS; c++) {
        uint64_t mask;
        memcpy(&mask, dst + 8 * c, sizeof mask);
        mask |= (uint64_t)((qh >> (4 * c)) & 0xF) << (4 * r);
        memcpy(dst + 8 * c, &mask, sizeof mask);
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
        memset(dst + scales, 0, R16_MASK_BYTES);
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q5_0 *b = (const block_q5_0 *)(src + r * stride);
            put16(dst, r, b->d);
            put_high_bits(dst + scales, r, b->qh);
            put_nibbles(dst + scales + R16_MASK_BYTES, r, b->qs);
        }
        break;
    case GGML_TYPE_Q5_1:
        memset(dst + 2 * scales, 0, R16_MASK_BYTES);
        for (int r = 0; r < R16_ROWS; r++) {
            const block_q5_1 *b = (const block_q5_1 *)(src + r * stride);
            put16(dst, r, b->d);
            put16(dst + scales, r, b->m);
            put_high_bits(dst + 2 * scales, r, b->qh);
            put_nibbles(dst + 2 * scales + R16_MASK_BYTES, r, b->qs);
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
    const size_t block_bytes = R16_ROWS * ts; /* one block of the group's 16 rows */
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *rows = src + (size_t)g * R16_ROWS * row_bytes;
        uint8_t *out = dst + (size_t)g * R16_ROWS * row_bytes;
        for (int64_t b = 0; b < k / bs; b++) repack_block32(type, rows + b * ts, row_bytes, out + b * block_bytes);
    }
    return 0;
}
