/* The matrix-product driver: quantize the activations once, then split the rows over the threads
 * (or hand the whole product to the ISA's tiled kernel when there are many tokens). */
#include <errno.h>
#include <string.h>

#include "edgelm_ops.h"
#include "fp16.h"
#include "repack.h"

/* Below this many multiply-adds a product runs on one thread: waking a worker costs about a
 * microsecond, which a product this small does not repay. */
#define PARALLEL_MIN_MACS (1 << 17)
/* Rows are handed out in chunks of a multiple of this, so threads do not share cache lines of y. */
#define ROW_SPLIT_ALIGN 16
/* Quantizing fewer values than this is not worth a second thread. */
#define PARALLEL_MIN_VALUES (1 << 15)
#define SCRATCH_ACTIVATIONS 0 /* shared scratch slot of the quantized activations */
#define SCRATCH_QSUM 1        /* shared slot of their block sums (R16 weights; the panel slot otherwise) */

static size_t align_up(size_t n) { return (n + 63) / 64 * 64; }

struct quantize_task {
    const struct kernel_table *kt;
    const float *x;
    struct act *a;
};

static void quantize_task(void *ctx, int ith, int nth) {
    const struct quantize_task *qt = ctx;
    const struct act *a = qt->a;
    const int64_t k = a->k;
    long long t0, t1;
    split_range(a->n_tok, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const float *x = qt->x + t * k;
        switch (a->kind) {
        case ACT_Q8_0:
            qt->kt->quantize_q8_0(x, k, a->q + t * k, a->d + t * a->n_blocks, a->s + t * a->n_blocks);
            break;
        case ACT_Q8_K:
            qt->kt->quantize_q8_K(x, k, a->q + t * k, a->d + t * a->n_blocks, a->bsums + t * (k / 16));
            break;
        case ACT_F16:
            qt->kt->round_f16(x, (float *)a->xf + t * k, k);
            break;
        case ACT_BF16: {
            float *y = (float *)a->xf + t * k;
            for (int64_t i = 0; i < k; i++) y[i] = round_bf16(x[i]);
            break;
        }
        case ACT_F32:
            break;
        }
    }
}

/* Lay the activation buffers out in one scratch block; NULL when out of memory. */
static int prepare_activations(struct exec *ex, struct act *a, int weight_type, const float *x, int64_t n_tok,
                               int64_t k) {
    memset(a, 0, sizeof *a);
    a->kind = act_kind_for(weight_type);
    a->n_tok = n_tok;
    a->k = k;
    const int slot = ex->n_threads + SCRATCH_ACTIVATIONS;
    switch (a->kind) {
    case ACT_F32:
        a->xf = x;
        return 0;
    case ACT_F16:
    case ACT_BF16: {
        float *buf = exec_scratch(ex, slot, (size_t)(n_tok * k) * sizeof(float));
        if (!buf) return ENOMEM;
        a->xf = buf;
        return 0;
    }
    case ACT_Q8_0:
    case ACT_Q8_K: {
        const int64_t bs = a->kind == ACT_Q8_0 ? QK : QK_K;
        a->n_blocks = k / bs;
        const size_t q_bytes = align_up((size_t)(n_tok * k));
        const size_t d_bytes = align_up((size_t)(n_tok * a->n_blocks) * sizeof(float));
        const size_t extra_bytes = a->kind == ACT_Q8_0 ? d_bytes : align_up((size_t)(n_tok * (k / 16)) * sizeof(int16_t));
        uint8_t *buf = exec_scratch(ex, slot, q_bytes + d_bytes + extra_bytes);
        if (!buf) return ENOMEM;
        a->q = (int8_t *)buf;
        a->d = (float *)(buf + q_bytes);
        if (a->kind == ACT_Q8_0) a->s = (float *)(buf + q_bytes + d_bytes);
        else a->bsums = (int16_t *)(buf + q_bytes + d_bytes);
        return 0;
    }
    }
    return EINVAL;
}

struct dot_task {
    dot_rows_fn fn;
    const struct matmul_args *m;
    long long rows_per_chunk;
};

static void dot_chunk(void *ctx, long long chunk, int ith) {
    const struct dot_task *dt = ctx;
    (void)ith;
    const long long r0 = chunk * dt->rows_per_chunk, n = dt->m->w->n_rows;
    const long long r1 = r0 + dt->rows_per_chunk < n ? r0 + dt->rows_per_chunk : n;
    dt->fn(dt->m, r0, r1, 0, dt->m->a->n_tok);
}

/* R16 weights over many tokens: this many groups (64 rows) per piece of work, whose weights stay in
 * L2 while every tile of tokens passes over them. */
#define R16_GEMM_GROUPS 4
/* Over few tokens the weights stream once, in pieces of at least this many bytes: each piece starts
 * a stream cold (its first prefetch distance is not prefetched), which cost small matrices (896 x 896
 * Q5_0 in pieces of 29 KB) ~10% of their speed. */
#define R16_STREAM_MIN_CHUNK_BYTES (64 << 10)

static int check_matrix(const struct kernel_table *kt, const struct qmatrix *w) {
    const int bs = ggml_block_size(w->type);
    if (bs == 0 || w->k % bs != 0) return EINVAL;
    const size_t row_bytes = w->layout == LAYOUT_R16 ? r16_row_bytes(w->type, w->k) : (size_t)(w->k / bs) * ggml_type_size(w->type);
    if (w->row_bytes != row_bytes) return EINVAL;
    if (w->layout == LAYOUT_R16 && (!kt->r16[w->type] || w->n_rows % R16_ROWS)) return EINVAL;
    return 0;
}

/* The activations of x as products with weights of `type` read them, in the exec's shared slots. */
static int quantize_activations(struct exec *ex, const struct kernel_table *kt, struct act *a, int type,
                                int layout, const float *x, int64_t n_tok, int64_t k) {
    int err = prepare_activations(ex, a, type, x, n_tok, k);
    if (err) return err;
    struct quantize_task qt = {kt, x, a};
    exec_run(ex, quantize_task, &qt, n_tok * k >= PARALLEL_MIN_VALUES ? ex->n_threads : 1);
    if (layout == LAYOUT_R16 && a->kind == ACT_Q8_0) {
        /* the integer sum of each block of activations: the weights' offsets apply exactly */
        a->qsum = exec_scratch(ex, ex->n_threads + SCRATCH_QSUM, (size_t)(n_tok * a->n_blocks) * sizeof(int32_t));
        if (!a->qsum) return ENOMEM;
        for (int64_t i = 0; i < n_tok * a->n_blocks; i++) {
            int32_t sum = 0;
            for (int j = 0; j < QK; j++) sum += a->q[i * QK + j];
            a->qsum[i] = sum;
        }
    }
    return 0;
}

/* R16 products of several matrices with one input: their groups in chunks, all in one pass over the
 * threads (a chunk never spans two matrices). */
#define SHARED_MAX 4
/* Over few tokens the chunks shrink as the work runs out ("guided"): each takes 1/(GUIDED_SHARE x
 * threads) of the bytes left, never less than R16_STREAM_MIN_CHUNK_BYTES.  The first chunks stream
 * long, and the threads run out of work within a small chunk of each other: with 16 equal chunks per
 * matrix, one thread of two waited 6 us at the end of a product on average (Qwen2.5-0.5B decode). */
#define GUIDED_SHARE 2
#define STREAM_MAX_CHUNKS 128

struct r16_piece {
    int matrix;
    long long g0, g1;
};

struct r16_shared_task {
    struct matmul_args m[SHARED_MAX];
    r16_groups_fn fn[SHARED_MAX];
    /* many tokens: chunks of R16_GEMM_GROUPS groups, matrix i's from first_chunk[i] */
    long long n_groups[SHARED_MAX], first_chunk[SHARED_MAX + 1];
    /* few tokens (n_pieces > 0): the chunks as listed */
    int n_pieces;
    struct r16_piece pieces[STREAM_MAX_CHUNKS];
};

static void r16_shared_chunk(void *ctx, long long chunk, int ith) {
    const struct r16_shared_task *st = ctx;
    (void)ith;
    if (st->n_pieces > 0) {
        const struct r16_piece *pc = &st->pieces[chunk];
        st->fn[pc->matrix](&st->m[pc->matrix], pc->g0, pc->g1);
        return;
    }
    int i = 0;
    while (chunk >= st->first_chunk[i + 1]) i++;
    const long long g0 = (chunk - st->first_chunk[i]) * R16_GEMM_GROUPS;
    const long long g1 = g0 + R16_GEMM_GROUPS < st->n_groups[i] ? g0 + R16_GEMM_GROUPS : st->n_groups[i];
    st->fn[i](&st->m[i], g0, g1);
}

/* The guided chunks of the matrices' groups, in order; every matrix keeps room for a chunk of its own. */
static int guided_pieces(struct r16_shared_task *st, const struct qmatrix *const *ws, int n, int nth) {
    long long left = 0;
    for (int i = 0; i < n; i++) left += st->n_groups[i] * (long long)(R16_ROWS * ws[i]->row_bytes);
    int c = 0;
    for (int i = 0; i < n; i++) {
        const long long group_bytes = (long long)(R16_ROWS * ws[i]->row_bytes);
        for (long long g = 0; g < st->n_groups[i];) {
            long long want = left / ((long long)GUIDED_SHARE * nth);
            if (want < R16_STREAM_MIN_CHUNK_BYTES) want = R16_STREAM_MIN_CHUNK_BYTES;
            long long groups = (want + group_bytes - 1) / group_bytes;
            if (groups > st->n_groups[i] - g || c == STREAM_MAX_CHUNKS - (n - i)) groups = st->n_groups[i] - g;
            st->pieces[c++] = (struct r16_piece){i, g, g + groups};
            g += groups;
            left -= groups * group_bytes;
        }
    }
    return c;
}

static void r16_run(struct exec *ex, const struct kernel_table *kt, const struct act *a, int n,
                    const struct qmatrix *const *ws, float *const *ys, int nth) {
    struct r16_shared_task st;
    st.first_chunk[0] = 0;
    st.n_pieces = 0;
    for (int i = 0; i < n; i++) {
        const struct qmatrix *w = ws[i];
        st.m[i] = (struct matmul_args){w, a, ys[i], w->n_rows};
        st.fn[i] = kt->r16[w->type];
        st.n_groups[i] = w->n_rows / R16_ROWS;
        st.first_chunk[i + 1] = st.first_chunk[i] + (st.n_groups[i] + R16_GEMM_GROUPS - 1) / R16_GEMM_GROUPS;
    }
    if (a->n_tok < kt->gemm_min_tokens) {
        st.n_pieces = guided_pieces(&st, ws, n, nth);
        exec_run_chunks(ex, r16_shared_chunk, &st, st.n_pieces, nth);
        return;
    }
    exec_run_chunks(ex, r16_shared_chunk, &st, st.first_chunk[n], nth);
}

int edgelm_matmul(const struct edgelm_ctx *ctx, const struct qmatrix *w, const float *x, int64_t n_tok, float *y) {
    const struct kernel_table *kt = ctx->kt;
    int err = check_matrix(kt, w);
    if (err) return err;
    if (n_tok <= 0 || w->n_rows <= 0) return 0;
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct act a;
    err = quantize_activations(&ex, kt, &a, w->type, w->layout, x, n_tok, w->k);
    if (err) goto done;
    const struct matmul_args m = {w, &a, y, w->n_rows};
    const double macs = (double)n_tok * (double)w->n_rows * (double)w->k;
    const int nth = macs >= PARALLEL_MIN_MACS ? ex.n_threads : 1;
    if (w->layout == LAYOUT_R16) {
        r16_run(&ex, kt, &a, 1, &w, &y, nth);
        goto done;
    }
    const gemm_fn gemm = kt->gemm[w->type];
    if (gemm && n_tok >= kt->gemm_min_tokens) {
        err = gemm(&ex, &m);
        if (err != EAGAIN) goto done; /* EAGAIN: this shape is better served by the rows kernel */
        err = 0;
    }
    struct dot_task dt = {kt->dot_rows[w->type] ? kt->dot_rows[w->type] : dot_rows_generic, &m,
                          chunk_size(w->n_rows, nth, ROW_SPLIT_ALIGN)};
    exec_run_chunks(&ex, dot_chunk, &dt, (w->n_rows + dt.rows_per_chunk - 1) / dt.rows_per_chunk, nth);
done:
    exec_end(&ex);
    return err;
}

int edgelm_matmul_shared(const struct edgelm_ctx *ctx, int n, const struct qmatrix *const *ws, const float *x,
                         int64_t n_tok, float *const *ys) {
    const struct kernel_table *kt = ctx->kt;
    int fused = n >= 1 && n <= SHARED_MAX;
    for (int i = 0; i < n; i++) {
        const int err = check_matrix(kt, ws[i]);
        if (err) return err;
        fused = fused && ws[i]->layout == LAYOUT_R16 && ws[i]->k == ws[0]->k && ws[i]->n_rows > 0 &&
                act_kind_for(ws[i]->type) == act_kind_for(ws[0]->type);
    }
    if (!fused) { /* one product after another */
        for (int i = 0; i < n; i++) {
            const int err = edgelm_matmul(ctx, ws[i], x, n_tok, ys[i]);
            if (err) return err;
        }
        return 0;
    }
    if (n_tok <= 0) return 0;
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct act a;
    int err = quantize_activations(&ex, kt, &a, ws[0]->type, LAYOUT_R16, x, n_tok, ws[0]->k);
    if (!err) {
        double macs = 0.0;
        for (int i = 0; i < n; i++) macs += (double)n_tok * (double)ws[i]->n_rows * (double)ws[i]->k;
        r16_run(&ex, kt, &a, n, ws, ys, macs >= PARALLEL_MIN_MACS ? ex.n_threads : 1);
    }
    exec_end(&ex);
    return err;
}
