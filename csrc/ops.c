/* Drivers of the non-matmul kernels: threading and the shape loops around the ISA pieces. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "edgelm_ops.h"
#include "fp16.h"

/* Elementwise work below this many values stays on the calling thread. */
#define PARALLEL_MIN_VALUES (1 << 15)
/* Unary ops split their vectors in multiples of this many floats (a cache line). */
#define ELEMENT_SPLIT_ALIGN 16

static int threads_for(const struct exec *ex, double work) {
    return work >= PARALLEL_MIN_VALUES ? ex->n_threads : 1;
}

/* ---- embedding rows ------------------------------------------------------------------------- */

struct rows_task {
    const struct qmatrix *w;
    const int64_t *ids;
    int64_t n;
    float *y;
};

static void get_rows_task(void *ctx, int ith, int nth) {
    const struct rows_task *rt = ctx;
    long long i0, i1;
    split_range(rt->n, ith, nth, 1, &i0, &i1);
    for (int64_t i = i0; i < i1; i++)
        dequantize_row(rt->w->type, rt->w->data + rt->ids[i] * rt->w->row_bytes, rt->y + i * rt->w->k, rt->w->k);
}

int edgelm_get_rows(const struct edgelm_ctx *ctx, const struct qmatrix *w, const int64_t *ids, int64_t n, float *y) {
    if (ggml_block_size(w->type) == 0) return EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->n_rows) return ERANGE;
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct rows_task rt = {w, ids, n, y};
    exec_run(&ex, get_rows_task, &rt, threads_for(&ex, (double)n * (double)w->k));
    exec_end(&ex);
    return 0;
}

int edgelm_read_rows(int fd, int64_t offset, int type, int64_t n_rows, int64_t k, const int64_t *ids, int64_t n,
                     float *y) {
    const int bs = ggml_block_size(type);
    if (bs == 0 || k <= 0 || k % bs) return EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= n_rows) return ERANGE;
    const size_t row_bytes = (size_t)(k / bs) * ggml_type_size(type);
    uint8_t *buf = malloc(row_bytes);
    if (!buf) return ENOMEM;
    int err = 0;
    for (int64_t i = 0; i < n && !err; i++) {
        const off_t at = (off_t)(offset + ids[i] * (int64_t)row_bytes);
        for (size_t done = 0; done < row_bytes && !err;) {
            const ssize_t got = pread(fd, buf + done, row_bytes - done, at + (off_t)done);
            if (got > 0) done += (size_t)got;
            else if (got == 0) err = EIO; /* the file is shorter than its header says */
            else if (errno != EINTR) err = errno;
        }
        if (!err) dequantize_row(type, buf, y + i * k, k);
    }
    free(buf);
    return err;
}

/* ---- RMSNorm and unary ops ------------------------------------------------------------------- */

struct norm_task {
    const struct kernel_table *kt;
    const float *x, *w;
    float *y;
    int64_t n_rows, n;
    float eps;
};

static void rms_norm_task(void *ctx, int ith, int nth) {
    const struct norm_task *nt = ctx;
    long long r0, r1;
    split_range(nt->n_rows, ith, nth, 1, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) nt->kt->rms_norm(nt->x + r * nt->n, nt->w, nt->y + r * nt->n, nt->n, nt->eps);
}

int edgelm_rms_norm(const struct edgelm_ctx *ctx, const float *x, const float *w, float *y, int64_t n_rows, int64_t n,
                    float eps) {
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct norm_task nt = {ctx->kt, x, w, y, n_rows, n, eps};
    exec_run(&ex, rms_norm_task, &nt, threads_for(&ex, (double)n_rows * (double)n));
    exec_end(&ex);
    return 0;
}

struct unary_task {
    const struct kernel_table *kt;
    enum edgelm_unary op;
    const float *x, *u;
    float *y;
    int64_t n;
};

static void unary_task(void *ctx, int ith, int nth) {
    const struct unary_task *ut = ctx;
    long long i0, i1;
    split_range(ut->n, ith, nth, ELEMENT_SPLIT_ALIGN, &i0, &i1);
    const int64_t n = i1 - i0;
    if (n <= 0) return;
    const float *x = ut->x + i0;
    float *y = ut->y + i0;
    if (ut->u) {
        if (ut->op == UNARY_SILU) ut->kt->silu_mul(x, ut->u + i0, y, n);
        else ut->kt->gelu_tanh_mul(x, ut->u + i0, y, n);
    } else {
        if (ut->op == UNARY_SILU) ut->kt->silu(x, y, n);
        else ut->kt->gelu_tanh(x, y, n);
    }
}

int edgelm_unary(const struct edgelm_ctx *ctx, enum edgelm_unary op, const float *x, const float *u, float *y,
                 int64_t n) {
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct unary_task ut = {ctx->kt, op, x, u, y, n};
    exec_run(&ex, unary_task, &ut, threads_for(&ex, (double)n));
    exec_end(&ex);
    return 0;
}

/* ---- RoPE --------------------------------------------------------------------------------------- */

void edgelm_rope_angles(const int64_t *positions, int64_t n_tok, int64_t rope_dim, float base, float freq_scale,
                        const float *factors, float *cos_out, float *sin_out) {
    const int64_t half = rope_dim / 2;
    /* the reference's float32 steps: theta_scale^(i+1) by repeated products, then / theta_scale */
    const float theta_scale = powf(base, -2.0f / (float)rope_dim);
    float inv_freq[half > 0 ? half : 1];
    float power = 1.0f;
    for (int64_t i = 0; i < half; i++) {
        power = i == 0 ? theta_scale : power * theta_scale;
        inv_freq[i] = power / theta_scale;
    }
    for (int64_t t = 0; t < n_tok; t++) {
        const float p = (float)positions[t] * freq_scale;
        for (int64_t i = 0; i < half; i++) {
            float theta = p * inv_freq[i];
            if (factors) theta = theta / factors[i];
            cos_out[t * half + i] = cosf(theta);
            sin_out[t * half + i] = sinf(theta);
        }
    }
}

void edgelm_rope(const float *x, const float *cos, const float *sin, float *y, int64_t n_tok, int64_t n_heads,
                 int64_t head_dim, int64_t half, int neox) {
    for (int64_t t = 0; t < n_tok; t++) {
        const float *c = cos + t * half, *s = sin + t * half;
        for (int64_t h = 0; h < n_heads; h++) {
            const float *xh = x + (t * n_heads + h) * head_dim;
            float *yh = y + (t * n_heads + h) * head_dim;
            if (yh != xh) memcpy(yh + 2 * half, xh + 2 * half, (size_t)(head_dim - 2 * half) * sizeof(float));
            if (neox) {
                for (int64_t i = 0; i < half; i++) {
                    const float a = xh[i], b = xh[i + half];
                    yh[i] = a * c[i] - b * s[i];
                    yh[i + half] = a * s[i] + b * c[i];
                }
            } else {
                for (int64_t i = 0; i < half; i++) {
                    const float a = xh[2 * i], b = xh[2 * i + 1];
                    yh[2 * i] = a * c[i] - b * s[i];
                    yh[2 * i + 1] = a * s[i] + b * c[i];
                }
            }
        }
    }
}

/* ---- memory bandwidth probe ---------------------------------------------------------------------- */

struct stream_task {
    const uint8_t *data;
    int64_t n;
    uint64_t sums[64]; /* one per thread; threads beyond 64 share the last */
};

static void stream_task(void *ctx, int ith, int nth) {
    struct stream_task *st = ctx;
    long long w0, w1; /* in whole 64-byte lines */
    split_range(st->n / 64, ith, nth, 1, &w0, &w1);
    const uint64_t *p = (const uint64_t *)(st->data + w0 * 64);
    uint64_t acc[8] = {0}; /* a line per step: the compiler keeps these in vector registers */
    for (long long i = 0; i < (w1 - w0); i++)
        for (int j = 0; j < 8; j++) acc[j] += p[8 * i + j];
    uint64_t sum = 0;
    for (int j = 0; j < 8; j++) sum += acc[j];
    st->sums[ith < 64 ? ith : 63] += sum;
}

uint64_t edgelm_stream_read(const struct edgelm_ctx *ctx, const uint8_t *data, int64_t n) {
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    struct stream_task st = {data, n, {0}};
    exec_run(&ex, stream_task, &st, ex.n_threads);
    exec_end(&ex);
    uint64_t sum = 0;
    for (int i = 0; i < 64; i++) sum += st.sums[i];
    return sum;
}
