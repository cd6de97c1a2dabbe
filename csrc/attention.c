/* Attention over an f16 KV cache: the driver around the ISA pieces (scores, softmax, weighted sums).
 *
 * Decode (one query token) splits the keys: each work item is one kv head and one block of keys,
 * and handles every query head of that kv head's group, so a block of K and V is read from memory
 * once per group and stays in cache while the group's heads use it.  The softmax of a row split
 * into blocks is exact: a first pass takes each block's max and sum of exp, the caller merges them,
 * and a second pass forms the f16-rounded weights from the row's max and sum (the reference's
 * formula) and adds each block's weighted values into per-thread partial outputs.  Where each thread
 * owns whole kv groups (the common case: 2, 4 or 8 kv heads over 2 threads) both passes run as one,
 * without the barrier between them, and the sums go straight to the output.
 *
 * Prefill (several query tokens) has enough (token, head) pairs to keep every thread busy. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "edgelm_ops.h"
#include "fp16.h"

/* Below this much work (query heads x keys x head width) attention stays on the calling thread. */
#define ATTENTION_PARALLEL_MIN_WORK (1 << 15)
/* Decode splits each kv head's keys into blocks of about this many keys: large enough that a
 * block's fixed costs (a few calls, the merge) are small, small enough to spread over threads. */
#define SPLIT_BLOCK_KEYS 256
/* Pass 1 forms a block's scores this many keys at a time, prefetching those keys' value rows (pass 2
 * reads them on the same thread): the values come in while the scores keep the core busy. */
#define VALUE_PREFETCH_KEYS 32

/* First index in sorted pos[0..n) with pos[i] >= value. */
static int64_t lower_bound(const int64_t *pos, int64_t n, int64_t value) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (pos[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The keys [lo, hi) a query at position p may see; with unsorted positions, all (masked later). */
static void visible_range(const struct attention_args *a, int keys_sorted, int64_t p, int64_t *lo, int64_t *hi) {
    *lo = 0;
    *hi = a->n_keys;
    if (!keys_sorted) return;
    *hi = lower_bound(a->k_pos, a->n_keys, p + 1);
    if (a->window > 0) *lo = lower_bound(a->k_pos, *hi, p - a->window + 1);
}

/* Scores of keys [lo, lo + n) that a query at p may not see become -inf (unsorted positions only). */
static void mask_scores(const struct attention_args *a, int64_t p, int64_t lo, int64_t n, float *scores) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t kp = a->k_pos[lo + i];
        if (kp > p || (a->window > 0 && p - kp >= a->window)) scores[i] = -INFINITY;
    }
}

/* ---- prefill: one (token, head) pair at a time -------------------------------------------------- */

struct rows_attention {
    const struct kernel_table *kt;
    const struct attention_args *a;
    struct exec *ex;
    int keys_sorted; /* key positions non-decreasing: each query sees one contiguous run of keys */
    int failed;
};

static void rows_attention_task(void *ctx, int ith, int nth) {
    struct rows_attention *at = ctx;
    const struct attention_args *a = at->a;
    const struct kernel_table *kt = at->kt;
    const int64_t group = a->n_heads / a->n_kv_heads;
    const int64_t k_stride = a->n_kv_heads * a->head_dim, v_stride = a->n_kv_heads * a->head_dim_v;
    float *scratch = exec_scratch(at->ex, ith, (size_t)(a->n_keys + a->head_dim) * sizeof(float));
    if (!scratch) {
        at->failed = 1;
        return;
    }
    float *scores = scratch, *q16 = scratch + a->n_keys;
    long long i0, i1;
    split_range(a->n_tok * a->n_heads, ith, nth, 1, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) {
        const int64_t t = item / a->n_heads, h = item % a->n_heads, g = h / group;
        const int64_t p = a->q_pos[t];
        kt->round_f16(a->q + (t * a->n_heads + h) * a->head_dim, q16, a->head_dim);
        int64_t lo, hi;
        visible_range(a, at->keys_sorted, p, &lo, &hi);
        const int64_t n = hi - lo;
        kt->scores_f16(q16, a->k + lo * k_stride + g * a->head_dim, k_stride, n, a->head_dim, a->scale, scores);
        if (!at->keys_sorted) mask_scores(a, p, lo, n, scores);
        kt->softmax_round_f16(scores, n);
        float *out = a->out + (t * a->n_heads + h) * a->head_dim_v;
        memset(out, 0, (size_t)a->head_dim_v * sizeof(float));
        kt->weighted_sum_f16(scores, a->v + lo * v_stride + g * a->head_dim_v, v_stride, n, a->head_dim_v, out);
    }
}

/* ---- decode: kv heads x key blocks ---------------------------------------------------------------- */

struct split_attention {
    const struct kernel_table *kt;
    const struct attention_args *a;
    int keys_sorted;
    int64_t lo, n;                /* the visible keys [lo, lo + n) */
    int64_t n_blocks, block;      /* blocks per kv head, and keys per block */
    const float *q16;             /* (H, D) the query rounded to f16 */
    float *scores;                /* (H, n) scores, then weights */
    float *block_max, *block_sum; /* (H, n_blocks) per-block softmax statistics */
    float *row_max, *row_sum;     /* (H) merged */
    float *partial;               /* (nth, H, Dv) per-thread sums of weighted values */
};

/* Keys [*k0, *k1) (relative to lo) of block b; the last blocks may be short or empty. */
static void block_keys(const struct split_attention *st, int64_t b, int64_t *k0, int64_t *k1) {
    *k0 = b * st->block < st->n ? b * st->block : st->n;
    *k1 = *k0 + st->block < st->n ? *k0 + st->block : st->n;
}

/* Pass 1 for one item (kv group g, block b): the scores of every head of the group against the block,
 * and the block's softmax statistics. */
static void scores_item(const struct split_attention *st, int64_t item) {
    const struct attention_args *a = st->a;
    const int64_t group = a->n_heads / a->n_kv_heads, k_stride = a->n_kv_heads * a->head_dim;
    const int64_t v_stride = a->n_kv_heads * a->head_dim_v, value_row_bytes = a->head_dim_v * (int64_t)sizeof(uint16_t);
    const int64_t g = item / st->n_blocks, b = item % st->n_blocks;
    int64_t k0, k1;
    block_keys(st, b, &k0, &k1);
    const uint16_t *k = a->k + (st->lo + k0) * k_stride + g * a->head_dim;
    const char *v = (const char *)(a->v + (st->lo + k0) * v_stride + g * a->head_dim_v);
    for (int64_t s0 = 0; s0 < k1 - k0; s0 += VALUE_PREFETCH_KEYS) {
        const int64_t s1 = s0 + VALUE_PREFETCH_KEYS < k1 - k0 ? s0 + VALUE_PREFETCH_KEYS : k1 - k0;
        /* these keys' value rows, for pass 2 on this thread, on their way while the scores are formed */
        for (int64_t r = s0; r < s1; r++)
            for (int64_t off = 0; off < value_row_bytes; off += CACHE_LINE)
                __builtin_prefetch(v + r * v_stride * (int64_t)sizeof(uint16_t) + off, 0, 2);
        st->kt->scores_group_f16(st->q16 + g * group * a->head_dim, group, k + s0 * k_stride, k_stride, s1 - s0,
                                 a->head_dim, a->scale, st->scores + g * group * st->n + k0 + s0, st->n);
    }
    for (int64_t h = g * group; h < (g + 1) * group; h++) {
        float *s = st->scores + h * st->n + k0;
        if (!st->keys_sorted) mask_scores(a, a->q_pos[0], st->lo + k0, k1 - k0, s);
        const int64_t stat = h * st->n_blocks + b;
        st->kt->softmax_stats(s, k1 - k0, &st->block_max[stat], &st->block_sum[stat]);
    }
}

/* Pass 2 for one item: the block's weights from its rows' max and sum, and its values added into
 * out (H, Dv): a thread's partial sums, or the output itself where the thread owns the group. */
static void values_item(const struct split_attention *st, int64_t item, float *out) {
    const struct attention_args *a = st->a;
    const int64_t group = a->n_heads / a->n_kv_heads, v_stride = a->n_kv_heads * a->head_dim_v;
    const int64_t g = item / st->n_blocks, b = item % st->n_blocks;
    int64_t k0, k1;
    block_keys(st, b, &k0, &k1);
    const uint16_t *v = a->v + (st->lo + k0) * v_stride + g * a->head_dim_v;
    for (int64_t h = g * group; h < (g + 1) * group; h++)
        st->kt->softmax_apply_f16(st->scores + h * st->n + k0, k1 - k0, st->row_max[h], st->row_sum[h]);
    st->kt->weighted_sum_group_f16(st->scores + g * group * st->n + k0, st->n, group, v, v_stride, k1 - k0,
                                   a->head_dim_v, out + g * group * a->head_dim_v, a->head_dim_v);
}

/* Head h's row max and sum from its blocks': sum_b sum_b' * exp(max_b - max). */
static void merge_head_stats(struct split_attention *st, int64_t h) {
    const float *bm = st->block_max + h * st->n_blocks, *bs = st->block_sum + h * st->n_blocks;
    float max = -INFINITY, sum = 0.0f;
    for (int64_t b = 0; b < st->n_blocks; b++) max = fmaxf(max, bm[b]);
    if (max != -INFINITY)
        for (int64_t b = 0; b < st->n_blocks; b++)
            if (bm[b] != -INFINITY) sum += bs[b] * expf(bm[b] - max);
    st->row_max[h] = max;
    st->row_sum[h] = sum;
}

static void split_scores_task(void *ctx, int ith, int nth) {
    const struct split_attention *st = ctx;
    long long i0, i1;
    split_range(st->a->n_kv_heads * st->n_blocks, ith, nth, 1, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) scores_item(st, item);
}

/* Items are split in the same order for every call with the same thread count, so results do not
 * depend on timing. */
static void split_values_task(void *ctx, int ith, int nth) {
    const struct split_attention *st = ctx;
    const struct attention_args *a = st->a;
    float *partial = st->partial + (int64_t)ith * a->n_heads * a->head_dim_v;
    memset(partial, 0, (size_t)(a->n_heads * a->head_dim_v) * sizeof(float));
    long long i0, i1;
    split_range(a->n_kv_heads * st->n_blocks, ith, nth, 1, &i0, &i1);
    for (int64_t item = i0; item < i1; item++) values_item(st, item, partial);
}

/* Both passes in one, where each thread owns whole kv groups (their count a multiple of the threads'):
 * a group's heads need no other thread's statistics, and their sums go straight to the output.  The
 * same operations in the same order as the two passes: the same numbers, one barrier and the sum of
 * the partial outputs fewer. */
static void owned_groups_task(void *ctx, int ith, int nth) {
    struct split_attention *st = ctx;
    const struct attention_args *a = st->a;
    const int64_t group = a->n_heads / a->n_kv_heads, dv = a->head_dim_v;
    long long g0, g1;
    split_range(a->n_kv_heads, ith, nth, 1, &g0, &g1);
    for (int64_t g = g0; g < g1; g++) {
        for (int64_t b = 0; b < st->n_blocks; b++) scores_item(st, g * st->n_blocks + b);
        for (int64_t h = g * group; h < (g + 1) * group; h++) merge_head_stats(st, h);
        memset(a->out + g * group * dv, 0, (size_t)(group * dv) * sizeof(float));
        for (int64_t b = 0; b < st->n_blocks; b++) values_item(st, g * st->n_blocks + b, a->out);
    }
}

static int split_attention(const struct edgelm_ctx *ctx, struct exec *ex, const struct attention_args *a,
                           int keys_sorted, int nth) {
    struct split_attention st = {ctx->kt, a, keys_sorted, 0, 0, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    int64_t hi;
    visible_range(a, keys_sorted, a->q_pos[0], &st.lo, &hi);
    st.n = hi - st.lo;
    /* about SPLIT_BLOCK_KEYS keys per block, and a multiple of the threads so items share out evenly */
    st.n_blocks = (st.n + SPLIT_BLOCK_KEYS - 1) / SPLIT_BLOCK_KEYS;
    st.n_blocks = (st.n_blocks + nth - 1) / nth * nth;
    if (st.n_blocks > st.n) st.n_blocks = st.n;
    if (st.n_blocks < 1) st.n_blocks = 1; /* no visible keys: one empty block, zero outputs */
    st.block = st.n > 0 ? (st.n + st.n_blocks - 1) / st.n_blocks : 0;
    const int64_t h = a->n_heads, dv = a->head_dim_v;
    const size_t n_floats = (size_t)(h * a->head_dim + h * st.n + 2 * h * st.n_blocks + 2 * h + nth * h * dv);
    float *buf = exec_scratch(ex, ex->n_threads, n_floats * sizeof(float)); /* a shared slot */
    if (!buf) return ENOMEM;
    float *q16 = buf;
    st.q16 = q16;
    st.scores = q16 + h * a->head_dim;
    st.block_max = st.scores + h * st.n;
    st.block_sum = st.block_max + h * st.n_blocks;
    st.row_max = st.block_sum + h * st.n_blocks;
    st.row_sum = st.row_max + h;
    st.partial = st.row_sum + h;
    ctx->kt->round_f16(a->q, q16, h * a->head_dim);
    if (a->n_kv_heads % nth == 0) {
        exec_run(ex, owned_groups_task, &st, nth);
        return 0;
    }
    exec_run(ex, split_scores_task, &st, nth);
    for (int64_t i = 0; i < h; i++) merge_head_stats(&st, i);
    exec_run(ex, split_values_task, &st, nth);
    for (int64_t j = 0; j < h * dv; j++) {
        float sum = 0.0f;
        for (int t = 0; t < nth; t++) sum += st.partial[t * h * dv + j];
        a->out[j] = sum;
    }
    return 0;
}

int edgelm_attention_cached(const struct edgelm_ctx *ctx, const struct attention_args *a, const float *k_new,
                            const float *v_new, int64_t start) {
    if (start < 0 || start + a->n_tok > a->n_keys) return EINVAL;
    uint16_t *k = (uint16_t *)a->k + start * a->n_kv_heads * a->head_dim;
    uint16_t *v = (uint16_t *)a->v + start * a->n_kv_heads * a->head_dim_v;
    for (int64_t i = 0; i < a->n_tok * a->n_kv_heads * a->head_dim; i++) k[i] = f32_to_f16(k_new[i]);
    for (int64_t i = 0; i < a->n_tok * a->n_kv_heads * a->head_dim_v; i++) v[i] = f32_to_f16(v_new[i]);
    return edgelm_attention(ctx, a);
}

int edgelm_attention(const struct edgelm_ctx *ctx, const struct attention_args *a) {
    if (a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0) return EINVAL;
    int sorted = 1;
    for (int64_t i = 1; i < a->n_keys && sorted; i++) sorted = a->k_pos[i - 1] <= a->k_pos[i];
    struct exec ex;
    exec_begin(&ex, ctx->pool);
    const double work = (double)a->n_tok * (double)a->n_heads * (double)a->n_keys * (double)a->head_dim;
    const int nth = work >= ATTENTION_PARALLEL_MIN_WORK ? ex.n_threads : 1;
    int err = 0;
    if (a->n_tok == 1) {
        err = split_attention(ctx, &ex, a, sorted, nth);
    } else {
        struct rows_attention at = {ctx->kt, a, &ex, sorted, 0};
        exec_run(&ex, rows_attention_task, &at, nth);
        err = at.failed ? ENOMEM : 0;
    }
    exec_end(&ex);
    return err;
}
