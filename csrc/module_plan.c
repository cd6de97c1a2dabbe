/* Kernels methods for whole decoder blocks: a block's weights bound once (a plan, holding their
 * buffers), then one call per block and step. */
#include "module_args.h"

#include <errno.h>
#include <stdlib.h>

#define PLAN_CAPSULE "edgelm.block_plan"

struct plan_object {
    struct block_plan plan;
    struct buffers bs; /* the weights' buffers, held as long as the plan lives */
};

static void plan_free(PyObject *capsule) {
    struct plan_object *po = PyCapsule_GetPointer(capsule, PLAN_CAPSULE);
    if (!po) return;
    release_buffers(&po->bs);
    free(po);
}

static int get_float(PyObject *obj, float *out, const char *name) {
    const double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s: expected a number", name);
        return -1;
    }
    *out = (float)v;
    return 0;
}

MODULE_DOC(block_plan_doc,
           "block_plan(wq, wk, wv, bq, bk, bv, q_norm, k_norm, attn_norm, wo, ffn_norm, gate, up, down, eps, "
           "rope_dim, base, freq_scale, factors, neox, n_heads, n_kv_heads, head_dim, head_dim_v, q_scale, window, "
           "gelu) -> plan\n--\n\n"
           "A pre-norm decoder block's weights bound for block(): weights as (buffer, type, n_rows, k, layout), "
           "optional arrays None.");

PyObject *Kernels_block_plan(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs(nargs, 27, "block_plan")) return NULL;
    struct plan_object *po = calloc(1, sizeof *po);
    if (!po) return PyErr_NoMemory();
    struct block_plan *p = &po->plan;
    struct qkv_args *a = &p->qkv;
    long long rope_dim, neox, h, kvh, d, dv, window, gelu;
    if (get_ll(args[15], &rope_dim, "rope_dim") || get_ll(args[19], &neox, "neox") ||
        get_ll(args[20], &h, "n_heads") || get_ll(args[21], &kvh, "n_kv_heads") || get_ll(args[22], &d, "head_dim") ||
        get_ll(args[23], &dv, "head_dim_v") || get_ll(args[25], &window, "window") || get_ll(args[26], &gelu, "gelu") ||
        get_float(args[14], &a->eps, "eps") || get_float(args[16], &a->rope_base, "base") ||
        get_float(args[17], &a->freq_scale, "freq_scale") || get_float(args[24], &p->q_scale, "q_scale"))
        goto fail;
    if (h <= 0 || kvh <= 0 || h % kvh || d <= 0 || dv <= 0 || rope_dim < 0 || rope_dim > d || rope_dim % 2 ||
        window < 0) {
        PyErr_SetString(PyExc_ValueError, "block_plan: bad head counts, widths, rope_dim or window");
        goto fail;
    }
    struct buffers *bs = &po->bs;
    if (take_matrix(bs, args[0], &p->wq, "wq") || take_matrix(bs, args[1], &p->wk, "wk") ||
        take_matrix(bs, args[2], &p->wv, "wv") || take_matrix(bs, args[9], &p->wo, "wo") ||
        take_matrix(bs, args[11], &p->gate, "gate") || take_matrix(bs, args[12], &p->up, "up") ||
        take_matrix(bs, args[13], &p->down, "down"))
        goto fail;
    const long long e = p->wq.k, f = p->gate.n_rows;
    if (p->wq.n_rows != h * d || p->wk.n_rows != kvh * d || p->wv.n_rows != kvh * dv || p->wk.k != e ||
        p->wv.k != e || p->wo.n_rows != e || p->wo.k != h * dv || p->gate.k != e || p->up.n_rows != f ||
        p->up.k != e || p->down.n_rows != e || p->down.k != f) {
        PyErr_SetString(PyExc_ValueError, "block_plan: the matrices' shapes do not fit together");
        goto fail;
    }
    a->rope_dim = rope_dim, a->neox = (int)neox, a->n_heads = h, a->n_kv_heads = kvh, a->head_dim = d;
    a->head_dim_v = dv;
    void *attn_norm, *ffn_norm;
    if (take_qkv_vectors(bs, args[3], args[4], args[5], args[6], args[7], args[18], a) ||
        take(bs, args[8], sizeof(float), 0, e, 0, "attn_norm", &attn_norm) ||
        take(bs, args[10], sizeof(float), 0, e, 0, "ffn_norm", &ffn_norm))
        goto fail;
    a->in_norm = attn_norm, p->ffn_norm = ffn_norm, p->window = window, p->gelu = gelu != 0;
    PyObject *capsule = PyCapsule_New(po, PLAN_CAPSULE, plan_free);
    if (!capsule) goto fail;
    return capsule;
fail:
    release_buffers(&po->bs);
    free(po);
    return NULL;
}

MODULE_DOC(block_doc, "block(plan, x, positions, k_cache, v_cache, key_pos, start)\n--\n\n"
                      "x (T, E) through the block of `plan` in place: new keys and values stored as f16 at rows "
                      "[start, start + T) of the caches, attention over their first len(key_pos) rows.");

PyObject *Kernels_block(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 7, "block")) return NULL;
    if (!PyCapsule_IsValid(args[0], PLAN_CAPSULE)) {
        PyErr_SetString(PyExc_TypeError, "block: plan is not one block_plan() made");
        return NULL;
    }
    const struct plan_object *po = PyCapsule_GetPointer(args[0], PLAN_CAPSULE);
    const struct block_plan *p = &po->plan;
    long long start;
    if (get_ll(args[6], &start, "start")) return NULL;
    struct buffers bs = {.n = 0};
    long long n_tok, n_keys;
    if (count_items(args[2], sizeof(int64_t), "positions", &n_tok) ||
        count_items(args[5], sizeof(int64_t), "key_pos", &n_keys))
        return NULL;
    if (start < 0 || start + n_tok > n_keys) {
        PyErr_SetString(PyExc_ValueError, "block: the new rows lie past the keys attended over");
        return NULL;
    }
    const long long kvh = p->qkv.n_kv_heads;
    void *x, *pos, *kp, *kc, *vc;
    if (take(&bs, args[1], sizeof(float), 1, n_tok * p->wq.k, 0, "x", &x) ||
        take(&bs, args[2], sizeof(int64_t), 0, n_tok, 0, "positions", &pos) ||
        take(&bs, args[5], sizeof(int64_t), 0, n_keys, 0, "key_pos", &kp) ||
        take_cache(&bs, args[3], kvh * p->qkv.head_dim, n_keys, "k_cache", &kc) ||
        take_cache(&bs, args[4], kvh * p->qkv.head_dim_v, n_keys, "v_cache", &vc))
        goto fail;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_block(&self->ctx, p, x, n_tok, pos, kc, vc, kp, n_keys, start);
    Py_END_ALLOW_THREADS
    release_buffers(&bs);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail:
    release_buffers(&bs);
    return NULL;
}
