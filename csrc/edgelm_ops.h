/* The C entry points of the kernels: what module.c binds for Python, and what a native model
 * (a whole decode step in one call) would call directly.
 *
 * Every call takes a context (the kernel table chosen once, and the thread pool) and plain pointers
 * with explicit sizes; nothing here knows Python.  Functions return 0, or an errno value. */
#ifndef EDGELM_OPS_H
#define EDGELM_OPS_H

#include <stdint.h>

#include "kernels.h"

struct edgelm_ctx {
    const struct kernel_table *kt;
    struct pool *pool; /* NULL: single-threaded */
};

/* y (T, N) = x (T, K) @ w^T, activations rounded as reference.quantize_activations. */
int edgelm_matmul(const struct edgelm_ctx *ctx, const struct qmatrix *w, const float *x, int64_t n_tok, float *y);

/* ys[i] (T, N_i) = x (T, K) @ ws[i]^T for n matrices with the same input: one quantization of x and,
 * for R16 weights whose activations agree, one pass over the threads for all of them; the results
 * are those of edgelm_matmul, bit for bit. */
int edgelm_matmul_shared(const struct edgelm_ctx *ctx, int n, const struct qmatrix *const *ws, const float *x,
                         int64_t n_tok, float *const *ys);

/* Row groups [g0, g1) of src (n_rows rows of k weights of `type`, the file's layout) into dst in the
 * R16 layout (repack.h), on every thread. */
int edgelm_repack_r16(const struct edgelm_ctx *ctx, int type, const uint8_t *src, uint8_t *dst, int64_t n_rows,
                      int64_t k, int64_t g0, int64_t g1);

/* y (n, K) = rows ids[0..n) of w, dequantized exactly. */
int edgelm_get_rows(const struct edgelm_ctx *ctx, const struct qmatrix *w, const int64_t *ids, int64_t n, float *y);

/* y (n, k) = rows ids[0..n) of a matrix of `type` stored at `offset` in file `fd`, read with pread
 * (nothing mapped: a lookup in a large table brings no pages around its rows into memory). */
int edgelm_read_rows(int fd, int64_t offset, int type, int64_t n_rows, int64_t k, const int64_t *ids, int64_t n,
                     float *y);

/* RMSNorm of n_rows rows of width n, each multiplied by w (n). */
int edgelm_rms_norm(const struct edgelm_ctx *ctx, const float *x, const float *w, float *y, int64_t n_rows,
                    int64_t n, float eps);

enum edgelm_unary { UNARY_SILU, UNARY_GELU_TANH };
/* y = act(x), or act(x) * u when u is not NULL. */
int edgelm_unary(const struct edgelm_ctx *ctx, enum edgelm_unary op, const float *x, const float *u, float *y,
                 int64_t n);

/* cos, sin (T, rope_dim/2) of theta = p * freq_scale * base^(-2i/rope_dim) / factors[i]. */
void edgelm_rope_angles(const int64_t *positions, int64_t n_tok, int64_t rope_dim, float base, float freq_scale,
                        const float *factors, float *cos_out, float *sin_out);

/* Rotate the first 2*half dims of each head of x (T, H, D) into y (may be x). */
void edgelm_rope(const float *x, const float *cos, const float *sin, float *y, int64_t n_tok, int64_t n_heads,
                 int64_t head_dim, int64_t half, int neox);

struct attention_args {
    const float *q;      /* (T, H, D) */
    const uint16_t *k;   /* (S, KVH, D) f16 */
    const uint16_t *v;   /* (S, KVH, Dv) f16 */
    const int64_t *q_pos; /* (T,) */
    const int64_t *k_pos; /* (S,) */
    float *out;          /* (T, H, Dv) */
    int64_t n_tok, n_keys, n_heads, n_kv_heads, head_dim, head_dim_v;
    float scale;
    int64_t window; /* 0: whole context */
};

/* Causal (optionally sliding-window) attention over an f16 KV cache, as reference.attention. */
int edgelm_attention(const struct edgelm_ctx *ctx, const struct attention_args *args);

/* The same after storing the new keys and values k_new (T, KVH, D), v_new (T, KVH, Dv) as f16 at rows
 * [start, start + T) of args->k, args->v (the cache, whose first n_keys rows are attended over). */
int edgelm_attention_cached(const struct edgelm_ctx *ctx, const struct attention_args *args, const float *k_new,
                            const float *v_new, int64_t start);

/* q, k, v of a block from its normed input x (T, E): the three projections (+ biases), each head's
 * RMSNorm of q and k (when given), and RoPE of the first rope_dim dims of every head. */
struct qkv_args {
    const struct qmatrix *wq, *wk, *wv;
    const float *bq, *bk, *bv;     /* NULL: no bias */
    const float *in_norm;          /* (E): RMSNorm of the input x first, or NULL (x already normed) */
    const float *q_norm, *k_norm;  /* (D) or NULL */
    float eps;
    const int64_t *positions;      /* (T) */
    int64_t rope_dim;
    float rope_base, freq_scale;
    const float *factors;          /* (rope_dim/2) or NULL */
    int neox;
    int64_t n_heads, n_kv_heads, head_dim, head_dim_v;
    float *q, *k, *v;              /* out: (T, H, D), (T, KVH, D), (T, KVH, Dv) */
};
int edgelm_qkv(const struct edgelm_ctx *ctx, const struct qkv_args *a, const float *x, int64_t n_tok);

/* y (T, E) = down(act(gate(x')) * up(x')), act SiLU or tanh-GELU, for x (T, E); x' = RMSNorm of x
 * with weight `norm` (E) and eps, or x itself when norm is NULL. */
int edgelm_ffn(const struct edgelm_ctx *ctx, const struct qmatrix *gate, const struct qmatrix *up,
               const struct qmatrix *down, const float *x, int64_t n_tok, const float *norm, float eps, int gelu,
               float *y);

/* A pre-norm decoder block with everything but its input fixed: x + attn(norm(x)), then
 * + ffn(norm(.)), with q/k/v as edgelm_qkv makes them (qkv.wq, .wk, .wv, .positions, .q, .k, .v are
 * set per call: the matrices are the plan's own). */
struct block_plan {
    struct qmatrix wq, wk, wv, wo, gate, up, down;
    struct qkv_args qkv; /* the input norm, biases, per-head norms, RoPE, heads, eps */
    const float *ffn_norm;
    float q_scale;
    int64_t window;
    int gelu;
};

/* x (T, E), one sequence's rows at `positions`, through the block in place: its keys and values are
 * stored at rows [start, start + T) of the f16 caches, and attention reads their first n_keys rows
 * (positions key_pos).  The numbers are those of edgelm_qkv, edgelm_attention_cached, edgelm_matmul
 * and edgelm_ffn called one by one with the residual sums between them. */
int edgelm_block(const struct edgelm_ctx *ctx, const struct block_plan *p, float *x, int64_t n_tok,
                 const int64_t *positions, uint16_t *k_cache, uint16_t *v_cache, const int64_t *key_pos,
                 int64_t n_keys, int64_t start);

/* Read n bytes with every thread and return their sum: the memory bandwidth a streaming kernel can
 * reach, for benchmarks to compare against. */
uint64_t edgelm_stream_read(const struct edgelm_ctx *ctx, const uint8_t *data, int64_t n);

#endif
