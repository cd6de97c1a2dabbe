/* Argument helpers shared by the Kernels methods (module.c, module_blocks.c). */
#include "module_args.h"

#include <errno.h>

#include "repack.h"

/* A C-contiguous buffer of `itemsize`-byte items, writable if asked. */
int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name) {
    const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous%s buffer", name, writable ? " writable" : "");
        return -1;
    }
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: expected items of %zd bytes, got %zd", name, itemsize, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

Py_ssize_t n_items(const Py_buffer *view) { return view->len / view->itemsize; }

int check_items(const Py_buffer *view, long long want, const char *name) {
    if (n_items(view) != want) {
        PyErr_Format(PyExc_ValueError, "%s: expected %lld values, got %zd", name, want, n_items(view));
        return -1;
    }
    return 0;
}

int get_ll(PyObject *obj, long long *out, const char *name) {
    *out = PyLong_AsLongLong(obj);
    if (*out == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s: expected an int", name);
        return -1;
    }
    return 0;
}

int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char *fn) {
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", fn, want, nargs);
        return -1;
    }
    return 0;
}

PyObject *raise_errno(int err) {
    if (err == ENOMEM) return PyErr_NoMemory();
    if (err == ERANGE) PyErr_SetString(PyExc_IndexError, "row index out of range");
    else PyErr_Format(PyExc_ValueError, "kernel rejected its arguments (error %d)", err);
    return NULL;
}

/* A weight matrix: (buffer, type, n_rows, k) -> qmatrix, checking the byte count. */
int get_qmatrix(PyObject *const *args, Py_buffer *view, struct qmatrix *w, int layout) {
    long long type, n_rows, k;
    if (get_ll(args[1], &type, "type") || get_ll(args[2], &n_rows, "n_rows") || get_ll(args[3], &k, "k")) return -1;
    const int bs = type >= 0 && type < GGML_TYPE_COUNT ? ggml_block_size((int)type) : 0;
    if (bs == 0) {
        PyErr_Format(PyExc_ValueError, "unsupported tensor type %lld", type);
        return -1;
    }
    if (k <= 0 || n_rows < 0 || k % bs) {
        PyErr_Format(PyExc_ValueError, "row length %lld is not a positive multiple of the block size %d", k, bs);
        return -1;
    }
    if (get_buffer(args[0], view, 1, 0, "w")) return -1;
    w->data = view->buf;
    w->type = (int)type;
    w->n_rows = n_rows;
    w->k = k;
    w->row_bytes = layout == LAYOUT_R16 ? r16_row_bytes((int)type, k) : (size_t)(k / bs) * ggml_type_size((int)type);
    w->layout = layout;
    if (view->len != (Py_ssize_t)(w->row_bytes * (size_t)n_rows)) {
        PyErr_Format(PyExc_ValueError, "w: expected %zu bytes, got %zd", w->row_bytes * (size_t)n_rows, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ---- buffers taken as a list, released together ----------------------------------------------------- */

void release_buffers(struct buffers *bs) {
    for (int i = 0; i < bs->n; i++) PyBuffer_Release(&bs->views[i]);
    bs->n = 0;
}

int take(struct buffers *bs, PyObject *obj, Py_ssize_t itemsize, int writable, long long want, int optional,
         const char *name, void **out) {
    *out = NULL;
    if (optional && obj == Py_None) return 0;
    if (bs->n >= MAX_BUFFERS) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return -1;
    }
    Py_buffer *view = &bs->views[bs->n];
    if (get_buffer(obj, view, itemsize, writable, name)) return -1;
    bs->n++;
    if (check_items(view, want, name)) return -1;
    *out = view->buf;
    return 0;
}

int take_matrix(struct buffers *bs, PyObject *obj, struct qmatrix *w, const char *name) {
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 5) {
        PyErr_Format(PyExc_TypeError, "%s: expected (buffer, type, n_rows, k, layout)", name);
        return -1;
    }
    PyObject *const *items = &PyTuple_GET_ITEM(obj, 0);
    long long layout;
    if (get_ll(items[4], &layout, "layout")) return -1;
    if (layout != LAYOUT_ROWS && layout != LAYOUT_R16) {
        PyErr_Format(PyExc_ValueError, "%s: unknown weight layout %lld", name, layout);
        return -1;
    }
    if (bs->n >= MAX_BUFFERS) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return -1;
    }
    if (get_qmatrix(items, &bs->views[bs->n], w, (int)layout)) return -1;
    bs->n++;
    return 0;
}

int count_items(PyObject *obj, Py_ssize_t itemsize, const char *name, long long *n) {
    Py_buffer view;
    if (get_buffer(obj, &view, itemsize, 0, name)) return -1;
    *n = n_items(&view);
    PyBuffer_Release(&view);
    return 0;
}

int take_cache(struct buffers *bs, PyObject *obj, long long width, long long n_keys, const char *name, void **out) {
    if (bs->n >= MAX_BUFFERS) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return -1;
    }
    Py_buffer *view = &bs->views[bs->n];
    if (get_buffer(obj, view, sizeof(uint16_t), 1, name)) return -1;
    bs->n++;
    /* a cache may hold more rows than are attended over */
    if (n_items(view) < n_keys * width || n_items(view) % width) {
        PyErr_Format(PyExc_ValueError, "%s: too small for %lld keys", name, n_keys);
        return -1;
    }
    *out = view->buf;
    return 0;
}

int take_qkv_vectors(struct buffers *bs, PyObject *bq, PyObject *bk, PyObject *bv, PyObject *q_norm, PyObject *k_norm,
                     PyObject *factors, struct qkv_args *a) {
    const long long h = a->n_heads, kvh = a->n_kv_heads, d = a->head_dim, dv = a->head_dim_v;
    void *vq, *vk, *vv, *qn, *kn, *fac;
    if (take(bs, bq, sizeof(float), 0, h * d, 1, "bq", &vq) || take(bs, bk, sizeof(float), 0, kvh * d, 1, "bk", &vk) ||
        take(bs, bv, sizeof(float), 0, kvh * dv, 1, "bv", &vv) ||
        take(bs, q_norm, sizeof(float), 0, d, 1, "q_norm", &qn) ||
        take(bs, k_norm, sizeof(float), 0, d, 1, "k_norm", &kn) ||
        take(bs, factors, sizeof(float), 0, a->rope_dim / 2, 1, "factors", &fac))
        return -1;
    a->bq = vq, a->bk = vk, a->bv = vv, a->q_norm = qn, a->k_norm = kn, a->factors = fac;
    return 0;
}
