/* Kernels methods around the model's blocks: weight layouts (R16), composite ops (q/k/v, the
 * feed-forward), embedding rows read from the file. */
#include "module_args.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "repack.h"

MODULE_DOC(read_rows_doc, "read_rows(fd, offset, type, n_rows, k, ids, out)\n--\n\n"
                            "out (n, k) = rows `ids` (int64) of a matrix stored at `offset` in file `fd`, "
                            "read with pread and dequantized.");

PyObject *Kernels_read_rows(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs(nargs, 7, "read_rows")) return NULL;
    long long fd, offset, type, n_rows, k;
    if (get_ll(args[0], &fd, "fd") || get_ll(args[1], &offset, "offset") || get_ll(args[2], &type, "type") ||
        get_ll(args[3], &n_rows, "n_rows") || get_ll(args[4], &k, "k"))
        return NULL;
    const int bs = type >= 0 && type < GGML_TYPE_COUNT ? ggml_block_size((int)type) : 0;
    if (bs == 0 || k <= 0 || k % bs || offset < 0 || fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "read_rows: bad fd, offset, type or row length");
        return NULL;
    }
    Py_buffer iv, ov;
    if (get_buffer(args[5], &iv, sizeof(int64_t), 0, "ids")) return NULL;
    if (get_buffer(args[6], &ov, sizeof(float), 1, "out")) {
        PyBuffer_Release(&iv);
        return NULL;
    }
    const long long n = n_items(&iv);
    int err = check_items(&ov, n * k, "out");
    if (!err) {
        Py_BEGIN_ALLOW_THREADS
        err = edgelm_read_rows((int)fd, offset, (int)type, n_rows, k, iv.buf, n, ov.buf);
        Py_END_ALLOW_THREADS
        if (err == EIO || err == EBADF) {
            PyErr_Format(PyExc_OSError, "reading rows of the model file failed: %s",
                         err == EIO ? "the file is shorter than it says" : strerror(err));
            err = -1;
        } else if (err) {
            raise_errno(err);
            err = -1;
        }
    } else {
        err = -1;
    }
    PyBuffer_Release(&ov);
    PyBuffer_Release(&iv);
    if (err) return NULL;
    Py_RETURN_NONE;
}

MODULE_DOC(qkv_doc, "qkv(x, wq, wk, wv, bq, bk, bv, q_norm, k_norm, eps, positions, rope_dim, base, freq_scale, "
                      "factors, neox, n_heads, n_kv_heads, head_dim, head_dim_v, q, k, v, norm)\n--\n\n"
                      "q, k, v of a block (input RMSNorm, projections, biases, per-head norms, RoPE); weights as "
                      "(buffer, type, n_rows, k, layout), optional arrays None.");

PyObject *Kernels_qkv(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 24, "qkv")) return NULL;
    struct buffers bs = {.n = 0};
    struct qmatrix wq, wk, wv;
    struct qkv_args a = {&wq, &wk, &wv};
    long long rope_dim, neox, h, kvh, d, dv;
    double eps, base, freq_scale;
    if (get_ll(args[11], &rope_dim, "rope_dim") || get_ll(args[15], &neox, "neox") || get_ll(args[16], &h, "n_heads") ||
        get_ll(args[17], &kvh, "n_kv_heads") || get_ll(args[18], &d, "head_dim") || get_ll(args[19], &dv, "head_dim_v"))
        return NULL;
    if ((eps = PyFloat_AsDouble(args[9])) == -1.0 && PyErr_Occurred()) return NULL;
    if ((base = PyFloat_AsDouble(args[12])) == -1.0 && PyErr_Occurred()) return NULL;
    if ((freq_scale = PyFloat_AsDouble(args[13])) == -1.0 && PyErr_Occurred()) return NULL;
    if (h <= 0 || kvh <= 0 || d <= 0 || dv <= 0 || rope_dim < 0 || rope_dim > d || rope_dim % 2) {
        PyErr_SetString(PyExc_ValueError, "qkv: bad head counts, widths or rope_dim");
        return NULL;
    }
    void *x, *pos, *q, *k, *v, *in_norm;
    a.rope_dim = rope_dim, a.n_heads = h, a.n_kv_heads = kvh, a.head_dim = d, a.head_dim_v = dv;
    if (take_matrix(&bs, args[1], &wq, "wq") || take_matrix(&bs, args[2], &wk, "wk") ||
        take_matrix(&bs, args[3], &wv, "wv"))
        goto fail;
    if (wq.k != wk.k || wq.k != wv.k) {
        PyErr_SetString(PyExc_ValueError, "qkv: the projections have different row lengths");
        goto fail;
    }
    long long n_tok; /* the token count comes from the positions */
    if (count_items(args[10], sizeof(int64_t), "positions", &n_tok)) goto fail;
    if (take(&bs, args[0], sizeof(float), 0, n_tok * wq.k, 0, "x", &x) ||
        take(&bs, args[10], sizeof(int64_t), 0, n_tok, 0, "positions", &pos) ||
        take_qkv_vectors(&bs, args[4], args[5], args[6], args[7], args[8], args[14], &a) ||
        take(&bs, args[20], sizeof(float), 1, n_tok * h * d, 0, "q", &q) ||
        take(&bs, args[21], sizeof(float), 1, n_tok * kvh * d, 0, "k", &k) ||
        take(&bs, args[22], sizeof(float), 1, n_tok * kvh * dv, 0, "v", &v) ||
        take(&bs, args[23], sizeof(float), 0, wq.k, 1, "norm", &in_norm))
        goto fail;
    a.in_norm = in_norm, a.eps = (float)eps, a.positions = pos, a.rope_base = (float)base;
    a.freq_scale = (float)freq_scale, a.neox = (int)neox, a.q = q, a.k = k, a.v = v;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_qkv(&self->ctx, &a, x, n_tok);
    Py_END_ALLOW_THREADS
    release_buffers(&bs);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail:
    release_buffers(&bs);
    return NULL;
}

MODULE_DOC(ffn_doc, "ffn(x, gate, up, down, gelu, out, norm, eps)\n--\n\n"
                      "out (T, E) = down(act(gate(x')) * up(x')), x' the RMSNorm of x with weight norm (or x when "
                      "norm is None); weights as (buffer, type, n_rows, k, layout).");

PyObject *Kernels_ffn(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 8, "ffn")) return NULL;
    struct buffers bs = {.n = 0};
    struct qmatrix gate, up, down;
    long long gelu;
    double eps;
    void *x, *out, *norm;
    if (get_ll(args[4], &gelu, "gelu")) return NULL;
    if ((eps = PyFloat_AsDouble(args[7])) == -1.0 && PyErr_Occurred()) return NULL;
    if (take_matrix(&bs, args[1], &gate, "gate") || take_matrix(&bs, args[2], &up, "up") ||
        take_matrix(&bs, args[3], &down, "down"))
        goto fail;
    if (up.n_rows != gate.n_rows || up.k != gate.k || down.k != gate.n_rows) {
        PyErr_SetString(PyExc_ValueError, "ffn: gate, up and down do not fit together");
        goto fail;
    }
    long long n_x;
    if (count_items(args[0], sizeof(float), "x", &n_x)) goto fail;
    const long long n_tok = n_x / gate.k;
    if (n_x % gate.k) {
        PyErr_SetString(PyExc_ValueError, "ffn: x: length is not a multiple of k");
        goto fail;
    }
    if (take(&bs, args[0], sizeof(float), 0, n_tok * gate.k, 0, "x", &x) ||
        take(&bs, args[5], sizeof(float), 1, n_tok * down.n_rows, 0, "out", &out) ||
        take(&bs, args[6], sizeof(float), 0, gate.k, 1, "norm", &norm))
        goto fail;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_ffn(&self->ctx, &gate, &up, &down, x, n_tok, norm, (float)eps, gelu != 0, out);
    Py_END_ALLOW_THREADS
    release_buffers(&bs);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail:
    release_buffers(&bs);
    return NULL;
}

MODULE_DOC(r16_supported_doc, "r16_supported(type) -> bool\n--\n\n"
                                "Whether these kernels multiply R16-repacked weights of GGUF `type`.");

PyObject *Kernels_r16_supported(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long type;
    if (check_nargs(nargs, 1, "r16_supported") || get_ll(args[0], &type, "type")) return NULL;
    return PyBool_FromLong(type >= 0 && type < GGML_TYPE_COUNT && self->ctx.kt->r16[type] != NULL);
}

MODULE_DOC(repack_r16_doc,
             "repack_r16(src, dst, type, n_rows, k, g0, g1)\n--\n\n"
             "Row groups [g0, g1) (16 rows each) of src (n_rows rows of k weights of GGUF `type`, as the "
             "file stores them) into dst in the R16 layout (r16_row_bytes(type, k) * n_rows bytes), on every thread.");

PyObject *Kernels_repack_r16(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 7, "repack_r16")) return NULL;
    long long g0, g1;
    if (get_ll(args[5], &g0, "g0") || get_ll(args[6], &g1, "g1")) return NULL;
    Py_buffer sv, dv;
    struct qmatrix w;
    PyObject *const qargs[4] = {args[0], args[2], args[3], args[4]};
    if (get_qmatrix(qargs, &sv, &w, LAYOUT_ROWS)) return NULL;
    if (!r16_has_layout(w.type) || w.n_rows % R16_ROWS || g0 < 0 || g0 > g1 || g1 > w.n_rows / R16_ROWS) {
        PyErr_Format(PyExc_ValueError, "repack_r16: type %d, %lld rows, groups [%lld, %lld) do not fit the R16 layout",
                     w.type, (long long)w.n_rows, g0, g1);
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (get_buffer(args[1], &dv, 1, 1, "dst")) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    const Py_ssize_t want = (Py_ssize_t)(r16_row_bytes(w.type, w.k) * (size_t)w.n_rows);
    if (dv.len != want) {
        PyErr_Format(PyExc_ValueError, "repack_r16: dst has %zd bytes, the R16 layout takes %zd", dv.len, want);
        PyBuffer_Release(&dv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_repack_r16(&self->ctx, w.type, w.data, dv.buf, w.n_rows, w.k, g0, g1);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&dv);
    PyBuffer_Release(&sv);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
}

MODULE_DOC(r16_row_bytes_doc, "r16_row_bytes(type, k) -> int\n--\n\n"
                                "Bytes per row of `type` rows of k weights in the R16 layout (0: it has none).");

PyObject *Kernels_r16_row_bytes(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    long long type, k;
    if (check_nargs(nargs, 2, "r16_row_bytes") || get_ll(args[0], &type, "type") || get_ll(args[1], &k, "k"))
        return NULL;
    const int bs = type >= 0 && type < GGML_TYPE_COUNT ? ggml_block_size((int)type) : 0;
    if (bs == 0 || k <= 0 || k % bs || !r16_has_layout((int)type)) return PyLong_FromLong(0);
    return PyLong_FromSize_t(r16_row_bytes((int)type, k));
}


MODULE_DOC(attention_cached_doc,
           "attention_cached(q, k, v, k_cache, v_cache, q_pos, k_pos, out, n_heads, n_kv_heads, head_dim, "
           "head_dim_v, scale, window, start)\n--\n\n"
           "Store k (T, KVH, D), v as f16 at rows [start, start + T) of the caches, then attend q over their "
           "first len(k_pos) rows (as attention()).");

PyObject *Kernels_attention_cached(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 15, "attention_cached")) return NULL;
    long long h, kvh, d, dv, window, start;
    if (get_ll(args[8], &h, "n_heads") || get_ll(args[9], &kvh, "n_kv_heads") || get_ll(args[10], &d, "head_dim") ||
        get_ll(args[11], &dv, "head_dim_v") || get_ll(args[13], &window, "window") || get_ll(args[14], &start, "start"))
        return NULL;
    const double scale = PyFloat_AsDouble(args[12]);
    if (scale == -1.0 && PyErr_Occurred()) return NULL;
    if (h <= 0 || kvh <= 0 || h % kvh || d <= 0 || dv <= 0 || start < 0) {
        PyErr_SetString(PyExc_ValueError, "attention_cached: bad head counts, widths or start");
        return NULL;
    }
    struct buffers bs = {.n = 0};
    long long n_tok, n_keys;
    if (count_items(args[5], sizeof(int64_t), "q_pos", &n_tok) || count_items(args[6], sizeof(int64_t), "k_pos", &n_keys))
        return NULL;
    if (start + n_tok > n_keys) {
        PyErr_SetString(PyExc_ValueError, "attention_cached: the new rows lie past the keys attended over");
        return NULL;
    }
    void *q, *kn, *vn, *kc, *vc, *qp, *kp, *out;
    if (take(&bs, args[0], sizeof(float), 0, n_tok * h * d, 0, "q", &q) ||
        take(&bs, args[1], sizeof(float), 0, n_tok * kvh * d, 0, "k", &kn) ||
        take(&bs, args[2], sizeof(float), 0, n_tok * kvh * dv, 0, "v", &vn) ||
        take(&bs, args[5], sizeof(int64_t), 0, n_tok, 0, "q_pos", &qp) ||
        take(&bs, args[6], sizeof(int64_t), 0, n_keys, 0, "k_pos", &kp) ||
        take(&bs, args[7], sizeof(float), 1, n_tok * h * dv, 0, "out", &out) ||
        take_cache(&bs, args[3], kvh * d, n_keys, "k_cache", &kc) || take_cache(&bs, args[4], kvh * dv, n_keys, "v_cache", &vc))
        goto fail;
    const struct attention_args a = {q, kc, vc, qp, kp, out, n_tok, n_keys, h, kvh, d, dv, (float)scale, window};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_attention_cached(&self->ctx, &a, kn, vn, start);
    Py_END_ALLOW_THREADS
    release_buffers(&bs);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail:
    release_buffers(&bs);
    return NULL;
}
