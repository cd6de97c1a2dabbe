/* Many-token products of the blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with AVX-512 VNNI.
 *
 * The streaming kernel (block32_avx512.inc) unpacks every weight block once per group of up to four
 * tokens; at prefill sizes that unpacking dominates.  Here a block of ROW_BLOCK rows is unpacked once
 * into a panel (the unsigned weight bytes of each pair of blocks, each chunk's scales and offset
 * coefficients) and a register tile of TILE_ROWS rows x TILE_TOKENS tokens runs over it.
 *
 * Every (row, token) result goes through exactly the float operations of the streaming kernel, in the
 * same order: a product's value does not depend on how many tokens came with it, so a sequence
 * decodes to the same tokens alone or batched with others. */
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c,bmi2")
#include <errno.h>
#include <immintrin.h>
#include <string.h>

#include "fp16.h"
#include "isa_kernels.h"

#define INLINE static inline __attribute__((always_inline))
#define MAX_TOKENS 4
#define TILE_ROWS 2
#define TILE_TOKENS MAX_TOKENS
/* Rows unpacked together: their panel (about 1.25 bytes per weight) stays in L2 while every token
 * tile passes over it. */
#define ROW_BLOCK 32

static inline __m256i bits_to_bytes(uint32_t bits) { return _mm256_movm_epi8(bits); }
#include "x86_blocks.inc"
#include "block32_avx512.inc"

#define PAIRS_PER_CHUNK (CHUNK_BLOCKS / 2)

/* One chunk of one row in the panel: what chunk_step computes before its token loop. */
struct chunk_panel {
    __m512 d;    /* the 16 block scales (zero past the row's end) */
    __m512 coef; /* their offset coefficients or mins */
    __m512i u[PAIRS_PER_CHUNK]; /* unsigned weight bytes of each pair of blocks */
};

static int is_block32(int type) {
    return type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_0 ||
           type == GGML_TYPE_Q5_1;
}

INLINE void unpack_row_panel(const int type, const uint8_t *row, const uint8_t *end, int64_t nb,
                             struct chunk_panel *panel) {
    const int with_min = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const float offset = type == GGML_TYPE_Q4_0 ? -8.0f : type == GGML_TYPE_Q5_0 ? -16.0f : -128.0f;
    for (int64_t b = 0, c = 0; b < nb; b += CHUNK_BLOCKS, c++) {
        const int n = nb - b < CHUNK_BLOCKS ? (int)(nb - b) : CHUNK_BLOCKS;
        const struct chunk_heads h = read_heads(type, row, b, n, end);
        panel[c].d = h.d;
        panel[c].coef = with_min ? h.m : _mm512_mul_ps(h.d, _mm512_set1_ps(offset));
        for (int i = 0; i < n; i += 2) panel[c].u[i / 2] = unpack_pair(type, row, b + i, i + 1 < n);
    }
}

static void build_panel(int type, const struct qmatrix *w, int64_t r0, int64_t n_rows, int64_t n_chunks,
                        struct chunk_panel *panel) {
    const uint8_t *end = w->data + w->n_rows * (int64_t)w->row_bytes;
    const int64_t nb = w->k / QK;
    for (int64_t i = 0; i < n_rows; i++) {
        const uint8_t *row = w->data + (r0 + i) * (int64_t)w->row_bytes;
        struct chunk_panel *p = panel + i * n_chunks;
        switch (type) {
        case GGML_TYPE_Q4_0: unpack_row_panel(GGML_TYPE_Q4_0, row, end, nb, p); break;
        case GGML_TYPE_Q4_1: unpack_row_panel(GGML_TYPE_Q4_1, row, end, nb, p); break;
        case GGML_TYPE_Q5_0: unpack_row_panel(GGML_TYPE_Q5_0, row, end, nb, p); break;
        case GGML_TYPE_Q5_1: unpack_row_panel(GGML_TYPE_Q5_1, row, end, nb, p); break;
        default: unpack_row_panel(GGML_TYPE_Q8_0, row, end, nb, p); break;
        }
    }
}

/* Pair i (block index within the chunk) for nr rows x nt tokens, into part[][]. */
INLINE void tile_pair(const struct chunk_panel *const *rows, int64_t c, const struct act *a, int64_t t0,
                      const int nr, const int nt, int64_t b, int i, const int two,
                      __m512 scale[TILE_ROWS][TILE_TOKENS], __m512 part[TILE_ROWS][TILE_TOKENS]) {
    const __m512i idx = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                         _mm512_set1_epi32(i));
    __m512i u[TILE_ROWS];
    for (int r = 0; r < nr; r++) u[r] = rows[r][c].u[i / 2];
    for (int j = 0; j < nt; j++) {
        const int8_t *xp = a->q + (t0 + j) * a->k + (b + i) * QK;
        const __m512i x = two ? _mm512_loadu_si512(xp) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)xp));
        for (int r = 0; r < nr; r++) {
            const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[r], x);
            part[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(idx, scale[r][j]), part[r][j]);
        }
    }
}

/* Chunk c (n blocks: a constant 16 for whole chunks) for nr rows x nt tokens: chunk_step's arithmetic
 * for each (row, token). */
INLINE void tile_chunk(const struct chunk_panel *const *rows, int64_t c, const int n, const struct act *a,
                       int64_t t0, const int nr, const int nt, __m512 acc[TILE_ROWS][TILE_TOKENS],
                       __m512 corr[TILE_ROWS][TILE_TOKENS]) {
    const int64_t nb = a->n_blocks, b = c * CHUNK_BLOCKS;
    const __mmask16 live = (__mmask16)((1u << n) - 1);
    __m512 scale[TILE_ROWS][TILE_TOKENS], part[2][TILE_ROWS][TILE_TOKENS];
    for (int j = 0; j < nt; j++) {
        const __m512 dx = _mm512_maskz_loadu_ps(live, a->d + (t0 + j) * nb + b);
        const __m512 sx = _mm512_maskz_loadu_ps(live, a->s + (t0 + j) * nb + b);
        for (int r = 0; r < nr; r++) {
            scale[r][j] = _mm512_mul_ps(rows[r][c].d, dx);
            corr[r][j] = _mm512_fmadd_ps(rows[r][c].coef, sx, corr[r][j]);
            part[0][r][j] = part[1][r][j] = _mm512_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        tile_pair(rows, c, a, t0, nr, nt, b, i, 1, scale, part[0]);
        tile_pair(rows, c, a, t0, nr, nt, b, i + 2, 1, scale, part[1]);
    }
    if (i + 2 <= n) {
        tile_pair(rows, c, a, t0, nr, nt, b, i, 1, scale, part[0]);
        i += 2;
    }
    if (i < n) tile_pair(rows, c, a, t0, nr, nt, b, i, 0, scale, part[1]);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = _mm512_add_ps(acc[r][j], _mm512_add_ps(part[0][r][j], part[1][r][j]));
}

/* nr rows (panels `rows`) x nt tokens from t0. */
INLINE void tile_kernel(const struct chunk_panel *const *rows, int64_t n_chunks, const struct act *a, int64_t t0,
                        const int nr, const int nt, float out[TILE_ROWS][TILE_TOKENS]) {
    const int64_t nb = a->n_blocks;
    __m512 acc[TILE_ROWS][TILE_TOKENS], corr[TILE_ROWS][TILE_TOKENS];
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = corr[r][j] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; (c + 1) * CHUNK_BLOCKS <= nb; c++) tile_chunk(rows, c, CHUNK_BLOCKS, a, t0, nr, nt, acc, corr);
    if (c < n_chunks) tile_chunk(rows, c, (int)(nb - c * CHUNK_BLOCKS), a, t0, nr, nt, acc, corr);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < nt; j++) out[r][j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[r][j], corr[r][j]));
}

#define TILE_CASE(NR, NT) tile_kernel(rows, n_chunks, a, t0, NR, NT, out)

static void run_tile(const struct chunk_panel *const *rows, int64_t n_chunks, const struct act *a, int64_t t0, int nr,
                     int nt, float out[TILE_ROWS][TILE_TOKENS]) {
    if (nr == TILE_ROWS) {
        switch (nt) {
        case 4: TILE_CASE(2, 4); break;
        case 3: TILE_CASE(2, 3); break;
        case 2: TILE_CASE(2, 2); break;
        default: TILE_CASE(2, 1); break;
        }
    } else {
        switch (nt) {
        case 4: TILE_CASE(1, 4); break;
        case 3: TILE_CASE(1, 3); break;
        case 2: TILE_CASE(1, 2); break;
        default: TILE_CASE(1, 1); break;
        }
    }
}

struct gemm_task {
    const struct matmul_args *m;
    struct exec *ex;
    int64_t n_chunks; /* chunks of 16 blocks per row */
    int failed;
};

/* One piece of work: ROW_BLOCK rows against every token. */
static void gemm_row_block(void *ctx, long long block, int ith) {
    struct gemm_task *gt = ctx;
    const struct matmul_args *m = gt->m;
    const struct qmatrix *w = m->w;
    const struct act *a = m->a;
    const int64_t r0 = block * ROW_BLOCK;
    const int64_t n_rows = w->n_rows - r0 < ROW_BLOCK ? w->n_rows - r0 : ROW_BLOCK;
    struct chunk_panel *panel =
        exec_scratch(gt->ex, ith, (size_t)(ROW_BLOCK * gt->n_chunks) * sizeof(struct chunk_panel));
    if (!panel) {
        gt->failed = 1;
        return;
    }
    build_panel(w->type, w, r0, n_rows, gt->n_chunks, panel);
    for (int64_t t0 = 0; t0 < a->n_tok; t0 += TILE_TOKENS) {
        const int nt = a->n_tok - t0 < TILE_TOKENS ? (int)(a->n_tok - t0) : TILE_TOKENS;
        for (int64_t i0 = 0; i0 < n_rows; i0 += TILE_ROWS) {
            const int nr = n_rows - i0 < TILE_ROWS ? (int)(n_rows - i0) : TILE_ROWS;
            const struct chunk_panel *rows[TILE_ROWS] = {panel + i0 * gt->n_chunks,
                                                         panel + (i0 + nr - 1) * gt->n_chunks};
            float out[TILE_ROWS][TILE_TOKENS];
            run_tile(rows, gt->n_chunks, a, t0, nr, nt, out);
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < nt; j++) m->y[(t0 + j) * m->y_stride + r0 + i0 + r] = out[r][j];
        }
    }
}

int gemm_avx512(struct exec *ex, const struct matmul_args *m) {
    if (!is_block32(m->w->type) || m->a->kind != ACT_Q8_0) return EAGAIN;
    struct gemm_task gt = {m, ex, (m->a->n_blocks + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS, 0};
    exec_run_chunks(ex, gemm_row_block, &gt, (m->w->n_rows + ROW_BLOCK - 1) / ROW_BLOCK, ex->n_threads);
    return gt.failed ? ENOMEM : 0;
}

#endif
