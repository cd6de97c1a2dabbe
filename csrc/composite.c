/* Pieces of a transformer block as one call each: the primitives of ops.c and matmul.c in the order
 * the Python layers call them, so a decode step crosses into C a few times per block, not twenty.
 * The results are those of the primitives called one by one, bit for bit. */
#include <errno.h>
#include <stdlib.h>

#include "edgelm_ops.h"

static void add_bias(float *y, const float *bias, int64_t n_tok, int64_t n) {
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t i = 0; i < n; i++) y[t * n + i] += bias[i];
}

int edgelm_qkv(const struct edgelm_ctx *ctx, const struct qkv_args *a, const float *x, int64_t n_tok) {
    const int64_t nq = a->n_heads * a->head_dim, nk = a->n_kv_heads * a->head_dim;
    const int64_t nv = a->n_kv_heads * a->head_dim_v, half = a->rope_dim / 2;
    if (a->wq->n_rows != nq || a->wk->n_rows != nk || a->wv->n_rows != nv || half * 2 > a->head_dim) return EINVAL;
    float *normed = NULL;
    if (a->in_norm) {
        if (!(normed = malloc((size_t)(n_tok * a->wq->k) * sizeof(float)))) return ENOMEM;
        edgelm_rms_norm(ctx, x, a->in_norm, normed, n_tok, a->wq->k, a->eps);
        x = normed;
    }
    const struct qmatrix *ws[3] = {a->wq, a->wk, a->wv};
    float *ys[3] = {a->q, a->k, a->v};
    const int err = edgelm_matmul_shared(ctx, 3, ws, x, n_tok, ys);
    free(normed);
    if (err) return err;
    if (a->bq) add_bias(a->q, a->bq, n_tok, nq);
    if (a->bk) add_bias(a->k, a->bk, n_tok, nk);
    if (a->bv) add_bias(a->v, a->bv, n_tok, nv);
    if (a->q_norm) edgelm_rms_norm(ctx, a->q, a->q_norm, a->q, n_tok * a->n_heads, a->head_dim, a->eps);
    if (a->k_norm) edgelm_rms_norm(ctx, a->k, a->k_norm, a->k, n_tok * a->n_kv_heads, a->head_dim, a->eps);
    float *angles = malloc((size_t)(2 * n_tok * (half > 0 ? half : 1)) * sizeof(float));
    if (!angles) return ENOMEM;
    float *cos = angles, *sin = angles + n_tok * half;
    edgelm_rope_angles(a->positions, n_tok, a->rope_dim, a->rope_base, a->freq_scale, a->factors, cos, sin);
    edgelm_rope(a->q, cos, sin, a->q, n_tok, a->n_heads, a->head_dim, half, a->neox);
    edgelm_rope(a->k, cos, sin, a->k, n_tok, a->n_kv_heads, a->head_dim, half, a->neox);
    free(angles);
    return 0;
}

int edgelm_ffn(const struct edgelm_ctx *ctx, const struct qmatrix *gate, const struct qmatrix *up,
               const struct qmatrix *down, const float *x, int64_t n_tok, const float *norm, float eps, int gelu,
               float *y) {
    const int64_t width = gate->n_rows;
    if (up->n_rows != width || down->k != width || gate->k != up->k) return EINVAL;
    /* the gate and up outputs, then (if asked) the normed input */
    float *g = malloc((size_t)(2 * n_tok * width + (norm ? n_tok * gate->k : 0)) * sizeof(float));
    if (!g) return ENOMEM;
    float *u = g + n_tok * width;
    if (norm) {
        float *normed = u + n_tok * width;
        edgelm_rms_norm(ctx, x, norm, normed, n_tok, gate->k, eps);
        x = normed;
    }
    const struct qmatrix *ws[2] = {gate, up};
    float *ys[2] = {g, u};
    int err = edgelm_matmul_shared(ctx, 2, ws, x, n_tok, ys);
    if (!err) err = edgelm_unary(ctx, gelu ? UNARY_GELU_TANH : UNARY_SILU, g, u, g, n_tok * width);
    if (!err) err = edgelm_matmul(ctx, down, g, n_tok, y);
    free(g);
    return err;
}

static void add_into(float *x, const float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

int edgelm_block(const struct edgelm_ctx *ctx, const struct block_plan *p, float *x, int64_t n_tok,
                 const int64_t *positions, uint16_t *k_cache, uint16_t *v_cache, const int64_t *key_pos,
                 int64_t n_keys, int64_t start) {
    const int64_t e = p->wq.k, h = p->qkv.n_heads, kvh = p->qkv.n_kv_heads;
    const int64_t d = p->qkv.head_dim, dv = p->qkv.head_dim_v;
    if (p->wo.n_rows != e || p->wo.k != h * dv || p->gate.k != e || p->down.n_rows != e) return EINVAL;
    /* q, k, v, the attention's output, then the block's two outputs (one buffer: one call's scratch) */
    const int64_t nq = n_tok * h * d, nk = n_tok * kvh * d, nv = n_tok * kvh * dv, na = n_tok * h * dv;
    float *q = malloc((size_t)(nq + nk + nv + na + n_tok * e) * sizeof(float));
    if (!q) return ENOMEM;
    float *k = q + nq, *v = k + nk, *att = v + nv, *y = att + na;
    struct qkv_args a = p->qkv;
    a.wq = &p->wq, a.wk = &p->wk, a.wv = &p->wv, a.positions = positions, a.q = q, a.k = k, a.v = v;
    int err = edgelm_qkv(ctx, &a, x, n_tok);
    if (!err) {
        const struct attention_args at = {q, k_cache, v_cache, positions, key_pos, att, n_tok, n_keys, h, kvh, d, dv,
                                          p->q_scale, p->window};
        err = edgelm_attention_cached(ctx, &at, k, v, start);
    }
    if (!err) err = edgelm_matmul(ctx, &p->wo, att, n_tok, y);
    if (!err) {
        add_into(x, y, n_tok * e);
        err = edgelm_ffn(ctx, &p->gate, &p->up, &p->down, x, n_tok, p->ffn_norm, p->qkv.eps, p->gelu, y);
    }
    if (!err) add_into(x, y, n_tok * e);
    free(q);
    return err;
}
