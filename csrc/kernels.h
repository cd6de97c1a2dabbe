/* The kernel table: what one ISA provides, and the data its kernels read.
 *
 * A table is chosen once (per Kernels object) and every call goes through it; the drivers in
 * matmul.c and ops.c hold what is shared between ISAs (activation layout, threading, tiling). */
#ifndef EDGELM_KERNELS_H
#define EDGELM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "ggml_types.h"
#include "isa.h"
#include "threadpool.h"

#define CACHE_LINE 64 /* bytes: the unit a prefetch brings in */

/* What activations are rounded to before the product with a weight type (reference.py's
 * quantize_activations): nothing, f16, bf16, 8-bit blocks of 32 with an f16 scale, or 8-bit blocks of
 * 256 with an f32 scale. */
enum act_kind { ACT_F32, ACT_F16, ACT_BF16, ACT_Q8_0, ACT_Q8_K };

enum act_kind act_kind_for(int weight_type);

/* Activations (T, K) ready for the dot products with one weight type. */
struct act {
    enum act_kind kind;
    int64_t n_tok, k;
    /* ACT_F32 / F16 / BF16: the values as the product sees them (already rounded), row stride k */
    const float *xf;
    /* ACT_Q8_0 / Q8_K: row t's quants at q + t * k */
    int8_t *q;
    int64_t n_blocks; /* blocks per row (k / 32 or k / 256) */
    float *d;         /* (T, n_blocks) block scales */
    float *s;         /* Q8_0: (T, n_blocks) d * sum(q): the term offsets and mins multiply */
    int32_t *qsum;    /* Q8_0, for R16 weights: (T, n_blocks) sum(q), offsets applied as integers */
    int16_t *bsums;   /* Q8_K: (T, k / 16) sums of q over 16 values */
};

/* A weight matrix: n_rows rows of k weights, row_bytes apart as the file stores them (layout 0,
 * LAYOUT_ROWS), or the same bytes in groups of 16 interleaved rows (LAYOUT_R16, repack.h). */
struct qmatrix {
    const uint8_t *data;
    int type;
    int64_t n_rows, k;
    size_t row_bytes;
    int layout;
};

/* One matrix product y (T, N) = x (T, K) @ w (N, K)^T, written at y[t * y_stride + r]. */
struct matmul_args {
    const struct qmatrix *w;
    const struct act *a;
    float *y;
    int64_t y_stride;
};

/* Rows [r0, r1) x tokens [t0, t1) of a product, streaming each weight row once per few tokens. */
typedef void (*dot_rows_fn)(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1);

/* A whole product over many tokens, tiled and threaded by the ISA itself; 0 on success. */
typedef int (*gemm_fn)(struct exec *ex, const struct matmul_args *m);

/* Row groups [g0, g1) (16 rows each) x every token of a product with R16 weights. */
typedef void (*r16_groups_fn)(const struct matmul_args *m, int64_t g0, int64_t g1);

struct kernel_table {
    enum isa isa;
    /* One row of k activations -> quants; k is a multiple of the block size. */
    void (*quantize_q8_0)(const float *x, int64_t k, int8_t *q, float *d, float *s);
    void (*quantize_q8_K)(const float *x, int64_t k, int8_t *q, float *d, int16_t *bsums);
    dot_rows_fn dot_rows[GGML_TYPE_COUNT]; /* NULL: the type goes through a generic path */
    gemm_fn gemm[GGML_TYPE_COUNT];         /* NULL: dot_rows serves every token count */
    int gemm_min_tokens;                   /* below this many tokens dot_rows is faster */
    r16_groups_fn r16[GGML_TYPE_COUNT];    /* NULL: the type stays in the file's layout */
    /* elementwise and reductions over n floats */
    void (*silu)(const float *x, float *y, int64_t n);
    void (*gelu_tanh)(const float *x, float *y, int64_t n);
    void (*silu_mul)(const float *g, const float *u, float *y, int64_t n);      /* silu(g) * u */
    void (*gelu_tanh_mul)(const float *g, const float *u, float *y, int64_t n); /* gelu(g) * u */
    void (*rms_norm)(const float *x, const float *w, float *y, int64_t n, float eps);
    /* attention pieces: scores of one query against n keys (f16, `stride` halves apart) ... */
    void (*scores_f16)(const float *q, const uint16_t *k, int64_t stride, int64_t n, int64_t d,
                       float scale, float *out);
    /* ... y[0..d) += sum_i p[i] * v_i for n values (f16, `stride` halves apart) */
    void (*weighted_sum_f16)(const float *p, const uint16_t *v, int64_t stride, int64_t n, int64_t d,
                             float *y);
    /* ... for the n_q query heads of a kv group at once (weights p_stride, outputs y_stride apart),
     * each value converted once per tile of heads */
    void (*weighted_sum_group_f16)(const float *p, int64_t p_stride, int64_t n_q, const uint16_t *v,
                                   int64_t stride, int64_t n, int64_t d, float *y, int64_t y_stride);
    /* scores of the n_q queries sharing a kv head (d floats apart) to out + r * out_stride, each key
     * converted once for the group */
    void (*scores_group_f16)(const float *q, int64_t n_q, const uint16_t *k, int64_t stride, int64_t n,
                             int64_t d, float scale, float *out, int64_t out_stride);
    /* softmax of n scores in place (-inf for masked keys), each weight rounded to f16 */
    void (*softmax_round_f16)(float *x, int64_t n);
    /* ... the same in two steps, for rows split into blocks: max and sum of exp(x - max) of a block,
     * then the weights of a block from the merged max and sum of the whole row */
    void (*softmax_stats)(const float *x, int64_t n, float *max_out, float *sum_out);
    void (*softmax_apply_f16)(float *x, int64_t n, float max, float sum);
    void (*round_f16)(const float *x, float *y, int64_t n); /* y = x rounded to f16 precision */
};

extern const struct kernel_table kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const struct kernel_table kernels_avx2;
extern const struct kernel_table kernels_avx512;
extern const struct kernel_table kernels_avx2_vnni; /* the R16 products without GFNI */
#endif
#if defined(__aarch64__)
extern const struct kernel_table kernels_neon;
#endif

/* The table for an ISA this build and CPU support, else NULL. */
const struct kernel_table *kernels_for_isa(enum isa isa);

/* Scalar pieces other tables reuse for what they do not specialize. */
void quantize_q8_0_scalar(const float *x, int64_t k, int8_t *q, float *d, float *s);
void quantize_q8_K_scalar(const float *x, int64_t k, int8_t *q, float *d, int16_t *bsums);
void dequantize_row(int type, const uint8_t *row, float *y, int64_t k); /* exact, like the reference */
void dot_rows_generic(const struct matmul_args *m, int64_t r0, int64_t r1, int64_t t0, int64_t t1);

#endif
