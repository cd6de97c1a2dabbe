/* edgelm._native: the kernels for Python, through the buffer protocol (no NumPy headers).
 *
 * `Kernels(isa, n_threads)` binds one kernel table and one thread pool; its methods take
 * C-contiguous buffers and explicit sizes, check every length against them, and write into output
 * buffers the caller allocated.  The GIL is released while a kernel runs. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <string.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "edgelm_ops.h"
#include "repack.h"

#include "module_args.h"

/* ---- methods ----------------------------------------------------------------------------------- */

PyDoc_STRVAR(matmul_doc, "matmul(x, w, type, n_rows, k, out, layout=0)\n--\n\n"
                         "out (T, n_rows) = x (T, k) float32 @ w^T, w packed rows of GGUF `type` (layout 0) "
                         "or those rows repacked by repack_r16 (layout 1).");

static PyObject *Kernels_matmul(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 && check_nargs(nargs, 6, "matmul")) return NULL;
    long long layout = LAYOUT_ROWS;
    if (nargs == 7 && get_ll(args[6], &layout, "layout")) return NULL;
    if (layout != LAYOUT_ROWS && layout != LAYOUT_R16) {
        PyErr_Format(PyExc_ValueError, "unknown weight layout %lld", layout);
        return NULL;
    }
    if (layout == LAYOUT_R16) {
        long long type;
        if (get_ll(args[2], &type, "type")) return NULL;
        if (type < 0 || type >= GGML_TYPE_COUNT || !self->ctx.kt->r16[type]) {
            PyErr_Format(PyExc_ValueError, "the %s kernels have no R16 product for tensor type %lld",
                         isa_names[self->ctx.kt->isa], type);
            return NULL;
        }
    }
    Py_buffer wv, xv, ov;
    struct qmatrix w;
    if (get_qmatrix(args + 1, &wv, &w, (int)layout)) return NULL;
    if (w.layout == LAYOUT_R16 && w.n_rows % R16_ROWS) {
        PyErr_Format(PyExc_ValueError, "R16 weights need a multiple of %d rows, not %lld", R16_ROWS, (long long)w.n_rows);
        PyBuffer_Release(&wv);
        return NULL;
    }
    if (get_buffer(args[0], &xv, sizeof(float), 0, "x")) goto fail_w;
    if (get_buffer(args[5], &ov, sizeof(float), 1, "out")) goto fail_x;
    const long long n_tok = n_items(&xv) / w.k;
    if (n_items(&xv) % w.k) {
        PyErr_SetString(PyExc_ValueError, "x: length is not a multiple of k");
        goto fail_o;
    }
    if (check_items(&ov, n_tok * w.n_rows, "out")) goto fail_o;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_matmul(&self->ctx, &w, xv.buf, n_tok, ov.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    PyBuffer_Release(&xv);
    PyBuffer_Release(&wv);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_x:
    PyBuffer_Release(&xv);
fail_w:
    PyBuffer_Release(&wv);
    return NULL;
}

PyDoc_STRVAR(get_rows_doc, "get_rows(w, type, n_rows, k, ids, out)\n--\n\n"
                           "out (n, k) = rows `ids` (int64) of w, dequantized.");

static PyObject *Kernels_get_rows(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 6, "get_rows")) return NULL;
    Py_buffer wv, iv, ov;
    struct qmatrix w;
    if (get_qmatrix(args, &wv, &w, LAYOUT_ROWS)) return NULL;
    if (get_buffer(args[4], &iv, sizeof(int64_t), 0, "ids")) goto fail_w;
    if (get_buffer(args[5], &ov, sizeof(float), 1, "out")) goto fail_i;
    if (check_items(&ov, (long long)n_items(&iv) * w.k, "out")) goto fail_o;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_get_rows(&self->ctx, &w, iv.buf, n_items(&iv), ov.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&wv);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_i:
    PyBuffer_Release(&iv);
fail_w:
    PyBuffer_Release(&wv);
    return NULL;
}

PyDoc_STRVAR(rms_norm_doc, "rms_norm(x, w, out, eps)\n--\n\nRMSNorm over rows of len(w), times w.");

static PyObject *Kernels_rms_norm(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 4, "rms_norm")) return NULL;
    const double eps = PyFloat_AsDouble(args[3]);
    if (eps == -1.0 && PyErr_Occurred()) return NULL;
    Py_buffer xv, wv, ov;
    if (get_buffer(args[0], &xv, sizeof(float), 0, "x")) return NULL;
    if (get_buffer(args[1], &wv, sizeof(float), 0, "w")) goto fail_x;
    if (get_buffer(args[2], &ov, sizeof(float), 1, "out")) goto fail_w;
    const long long n = n_items(&wv);
    if (n == 0 || n_items(&xv) % n || check_items(&ov, n_items(&xv), "out")) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "x: length is not a multiple of len(w)");
        goto fail_o;
    }
    Py_BEGIN_ALLOW_THREADS
    edgelm_rms_norm(&self->ctx, xv.buf, wv.buf, ov.buf, n_items(&xv) / n, n, (float)eps);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    PyBuffer_Release(&wv);
    PyBuffer_Release(&xv);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_w:
    PyBuffer_Release(&wv);
fail_x:
    PyBuffer_Release(&xv);
    return NULL;
}

/* silu / gelu_tanh (x, out) and their gated forms (g, u, out). */
static PyObject *unary(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs, enum edgelm_unary op,
                       int gated, const char *name) {
    if (check_nargs(nargs, gated ? 3 : 2, name)) return NULL;
    Py_buffer xv, uv, ov;
    if (get_buffer(args[0], &xv, sizeof(float), 0, "x")) return NULL;
    if (gated && get_buffer(args[1], &uv, sizeof(float), 0, "u")) goto fail_x;
    if (get_buffer(args[gated ? 2 : 1], &ov, sizeof(float), 1, "out")) goto fail_u;
    if (check_items(&ov, n_items(&xv), "out") || (gated && check_items(&uv, n_items(&xv), "u"))) goto fail_o;
    Py_BEGIN_ALLOW_THREADS
    edgelm_unary(&self->ctx, op, xv.buf, gated ? uv.buf : NULL, ov.buf, n_items(&xv));
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    if (gated) PyBuffer_Release(&uv);
    PyBuffer_Release(&xv);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_u:
    if (gated) PyBuffer_Release(&uv);
fail_x:
    PyBuffer_Release(&xv);
    return NULL;
}

static PyObject *Kernels_silu(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return unary(self, args, nargs, UNARY_SILU, 0, "silu");
}
static PyObject *Kernels_gelu_tanh(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return unary(self, args, nargs, UNARY_GELU_TANH, 0, "gelu_tanh");
}
static PyObject *Kernels_silu_mul(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return unary(self, args, nargs, UNARY_SILU, 1, "silu_mul");
}
static PyObject *Kernels_gelu_tanh_mul(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return unary(self, args, nargs, UNARY_GELU_TANH, 1, "gelu_tanh_mul");
}

PyDoc_STRVAR(rope_angles_doc, "rope_angles(positions, rope_dim, base, freq_scale, factors, cos_out, sin_out)\n--\n\n"
                              "cos, sin (T, rope_dim/2) of RoPE; factors is a float32 buffer or None.");

static PyObject *Kernels_rope_angles(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs(nargs, 7, "rope_angles")) return NULL;
    long long rope_dim;
    if (get_ll(args[1], &rope_dim, "rope_dim")) return NULL;
    const double base = PyFloat_AsDouble(args[2]), freq_scale = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (rope_dim < 2 || rope_dim % 2) {
        PyErr_SetString(PyExc_ValueError, "rope_dim must be a positive even number");
        return NULL;
    }
    Py_buffer pv, fv, cv, sv;
    const int has_factors = args[4] != Py_None;
    if (get_buffer(args[0], &pv, sizeof(int64_t), 0, "positions")) return NULL;
    if (has_factors && get_buffer(args[4], &fv, sizeof(float), 0, "factors")) goto fail_p;
    if (get_buffer(args[5], &cv, sizeof(float), 1, "cos_out")) goto fail_f;
    if (get_buffer(args[6], &sv, sizeof(float), 1, "sin_out")) goto fail_c;
    const long long want = (long long)n_items(&pv) * (rope_dim / 2);
    if (check_items(&cv, want, "cos_out") || check_items(&sv, want, "sin_out") ||
        (has_factors && check_items(&fv, rope_dim / 2, "factors")))
        goto fail_s;
    edgelm_rope_angles(pv.buf, n_items(&pv), rope_dim, (float)base, (float)freq_scale,
                       has_factors ? fv.buf : NULL, cv.buf, sv.buf);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&cv);
    if (has_factors) PyBuffer_Release(&fv);
    PyBuffer_Release(&pv);
    Py_RETURN_NONE;
fail_s:
    PyBuffer_Release(&sv);
fail_c:
    PyBuffer_Release(&cv);
fail_f:
    if (has_factors) PyBuffer_Release(&fv);
fail_p:
    PyBuffer_Release(&pv);
    return NULL;
}

PyDoc_STRVAR(rope_doc, "rope(x, cos, sin, out, n_tok, n_heads, head_dim, neox)\n--\n\n"
                       "Rotate the first 2*len(cos)/n_tok dims of each head of x (T, H, D).");

static PyObject *Kernels_rope(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (check_nargs(nargs, 8, "rope")) return NULL;
    long long n_tok, n_heads, head_dim;
    if (get_ll(args[4], &n_tok, "n_tok") || get_ll(args[5], &n_heads, "n_heads") ||
        get_ll(args[6], &head_dim, "head_dim"))
        return NULL;
    const int neox = PyObject_IsTrue(args[7]);
    if (neox < 0) return NULL;
    Py_buffer xv, cv, sv, ov;
    if (get_buffer(args[0], &xv, sizeof(float), 0, "x")) return NULL;
    if (get_buffer(args[1], &cv, sizeof(float), 0, "cos")) goto fail_x;
    if (get_buffer(args[2], &sv, sizeof(float), 0, "sin")) goto fail_c;
    if (get_buffer(args[3], &ov, sizeof(float), 1, "out")) goto fail_s;
    const long long half = n_tok > 0 ? n_items(&cv) / n_tok : 0;
    if (check_items(&xv, n_tok * n_heads * head_dim, "x") || check_items(&ov, n_items(&xv), "out") ||
        check_items(&cv, n_tok * half, "cos") || check_items(&sv, n_items(&cv), "sin"))
        goto fail_o;
    if (2 * half > head_dim) {
        PyErr_SetString(PyExc_ValueError, "rope dims exceed the head width");
        goto fail_o;
    }
    edgelm_rope(xv.buf, cv.buf, sv.buf, ov.buf, n_tok, n_heads, head_dim, half, neox);
    PyBuffer_Release(&ov);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&xv);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_s:
    PyBuffer_Release(&sv);
fail_c:
    PyBuffer_Release(&cv);
fail_x:
    PyBuffer_Release(&xv);
    return NULL;
}

PyDoc_STRVAR(attention_doc,
             "attention(q, k, v, q_pos, k_pos, out, n_heads, n_kv_heads, head_dim, head_dim_v, scale, window)\n--\n\n"
             "Causal attention of q (T, H, D) float32 over k (S, KVH, D), v (S, KVH, Dv) float16.");

static PyObject *Kernels_attention(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 12, "attention")) return NULL;
    long long n_heads, n_kv_heads, head_dim, head_dim_v, window;
    if (get_ll(args[6], &n_heads, "n_heads") || get_ll(args[7], &n_kv_heads, "n_kv_heads") ||
        get_ll(args[8], &head_dim, "head_dim") || get_ll(args[9], &head_dim_v, "head_dim_v") ||
        get_ll(args[11], &window, "window"))
        return NULL;
    const double scale = PyFloat_AsDouble(args[10]);
    if (scale == -1.0 && PyErr_Occurred()) return NULL;
    if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 || head_dim_v <= 0) {
        PyErr_SetString(PyExc_ValueError, "attention: bad head counts or widths");
        return NULL;
    }
    Py_buffer qv, kv, vv, qp, kp, ov;
    if (get_buffer(args[0], &qv, sizeof(float), 0, "q")) return NULL;
    if (get_buffer(args[1], &kv, sizeof(uint16_t), 0, "k")) goto fail_q;
    if (get_buffer(args[2], &vv, sizeof(uint16_t), 0, "v")) goto fail_k;
    if (get_buffer(args[3], &qp, sizeof(int64_t), 0, "q_pos")) goto fail_v;
    if (get_buffer(args[4], &kp, sizeof(int64_t), 0, "k_pos")) goto fail_qp;
    if (get_buffer(args[5], &ov, sizeof(float), 1, "out")) goto fail_kp;
    const long long n_tok = n_items(&qp), n_keys = n_items(&kp);
    if (check_items(&qv, n_tok * n_heads * head_dim, "q") || check_items(&kv, n_keys * n_kv_heads * head_dim, "k") ||
        check_items(&vv, n_keys * n_kv_heads * head_dim_v, "v") ||
        check_items(&ov, n_tok * n_heads * head_dim_v, "out"))
        goto fail_o;
    const struct attention_args a = {qv.buf, kv.buf, vv.buf, qp.buf, kp.buf, ov.buf, n_tok, n_keys, n_heads,
                                     n_kv_heads, head_dim, head_dim_v, (float)scale, window};
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = edgelm_attention(&self->ctx, &a);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&ov);
    PyBuffer_Release(&kp);
    PyBuffer_Release(&qp);
    PyBuffer_Release(&vv);
    PyBuffer_Release(&kv);
    PyBuffer_Release(&qv);
    if (err) return raise_errno(err);
    Py_RETURN_NONE;
fail_o:
    PyBuffer_Release(&ov);
fail_kp:
    PyBuffer_Release(&kp);
fail_qp:
    PyBuffer_Release(&qp);
fail_v:
    PyBuffer_Release(&vv);
fail_k:
    PyBuffer_Release(&kv);
fail_q:
    PyBuffer_Release(&qv);
    return NULL;
}

static PyObject *Kernels_noop(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    (void)args;
    (void)nargs;
    Py_RETURN_NONE;
}

static void noop_task(void *ctx, int ith, int nth) {
    (void)ctx;
    (void)ith;
    (void)nth;
}

PyDoc_STRVAR(dispatch_doc, "dispatch(n)\n--\n\nRun n empty tasks on all threads: the per-call overhead.");

static PyObject *Kernels_dispatch(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    long long n;
    if (check_nargs(nargs, 1, "dispatch") || get_ll(args[0], &n, "n")) return NULL;
    Py_BEGIN_ALLOW_THREADS
    for (long long i = 0; i < n; i++) {
        struct exec ex;
        exec_begin(&ex, self->ctx.pool);
        exec_run(&ex, noop_task, NULL, ex.n_threads);
        exec_end(&ex);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(stream_read_doc, "stream_read(buffer) -> int\n--\n\n"
                              "Read a buffer with every thread (its sum of 64-bit words): a bandwidth probe.");

static PyObject *Kernels_stream_read(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (check_nargs(nargs, 1, "stream_read")) return NULL;
    Py_buffer view;
    if (get_buffer(args[0], &view, 1, 0, "buffer")) return NULL;
    uint64_t sum;
    Py_BEGIN_ALLOW_THREADS
    sum = edgelm_stream_read(&self->ctx, view.buf, view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(sum);
}

static PyMethodDef Kernels_methods[] = {
    {"qkv", (PyCFunction)(void (*)(void))Kernels_qkv, METH_FASTCALL, qkv_doc},
    {"ffn", (PyCFunction)(void (*)(void))Kernels_ffn, METH_FASTCALL, ffn_doc},
    {"block_plan", (PyCFunction)(void (*)(void))Kernels_block_plan, METH_FASTCALL, block_plan_doc},
    {"block", (PyCFunction)(void (*)(void))Kernels_block, METH_FASTCALL, block_doc},
    {"r16_row_bytes", (PyCFunction)(void (*)(void))Kernels_r16_row_bytes, METH_FASTCALL, r16_row_bytes_doc},
    {"repack_r16", (PyCFunction)(void (*)(void))Kernels_repack_r16, METH_FASTCALL, repack_r16_doc},
    {"r16_supported", (PyCFunction)(void (*)(void))Kernels_r16_supported, METH_FASTCALL, r16_supported_doc},
    {"matmul", (PyCFunction)(void (*)(void))Kernels_matmul, METH_FASTCALL, matmul_doc},
    {"get_rows", (PyCFunction)(void (*)(void))Kernels_get_rows, METH_FASTCALL, get_rows_doc},
    {"read_rows", (PyCFunction)(void (*)(void))Kernels_read_rows, METH_FASTCALL, read_rows_doc},
    {"rms_norm", (PyCFunction)(void (*)(void))Kernels_rms_norm, METH_FASTCALL, rms_norm_doc},
    {"silu", (PyCFunction)(void (*)(void))Kernels_silu, METH_FASTCALL, "silu(x, out)"},
    {"gelu_tanh", (PyCFunction)(void (*)(void))Kernels_gelu_tanh, METH_FASTCALL, "gelu_tanh(x, out)"},
    {"silu_mul", (PyCFunction)(void (*)(void))Kernels_silu_mul, METH_FASTCALL, "silu_mul(g, u, out): silu(g) * u"},
    {"gelu_tanh_mul", (PyCFunction)(void (*)(void))Kernels_gelu_tanh_mul, METH_FASTCALL,
     "gelu_tanh_mul(g, u, out): gelu_tanh(g) * u"},
    {"rope_angles", (PyCFunction)(void (*)(void))Kernels_rope_angles, METH_FASTCALL, rope_angles_doc},
    {"rope", (PyCFunction)(void (*)(void))Kernels_rope, METH_FASTCALL, rope_doc},
    {"attention", (PyCFunction)(void (*)(void))Kernels_attention, METH_FASTCALL, attention_doc},
    {"attention_cached", (PyCFunction)(void (*)(void))Kernels_attention_cached, METH_FASTCALL, attention_cached_doc},
    {"noop", (PyCFunction)(void (*)(void))Kernels_noop, METH_FASTCALL, "noop(): the cost of a method call"},
    {"dispatch", (PyCFunction)(void (*)(void))Kernels_dispatch, METH_FASTCALL, dispatch_doc},
    {"stream_read", (PyCFunction)(void (*)(void))Kernels_stream_read, METH_FASTCALL, stream_read_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- the Kernels type ---------------------------------------------------------------------------- */

static int Kernels_init(KernelsObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"isa", "n_threads", NULL};
    const char *isa_name = NULL;
    int n_threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|zi", kwlist, &isa_name, &n_threads)) return -1;
    if (self->ctx.pool) {
        PyErr_SetString(PyExc_RuntimeError, "Kernels is already initialized");
        return -1;
    }
    const int isa = isa_name ? isa_from_name(isa_name) : (int)isa_best();
    if (isa < 0) {
        PyErr_Format(PyExc_ValueError, "unknown ISA %s", isa_name);
        return -1;
    }
    self->ctx.kt = kernels_for_isa((enum isa)isa);
    if (!self->ctx.kt) {
        PyErr_Format(PyExc_ValueError, "this CPU (or build) cannot run the %s kernels", isa_names[isa]);
        return -1;
    }
    if (n_threads <= 0) n_threads = cpu_physical_cores();
    self->ctx.pool = pool_create(n_threads);
    if (!self->ctx.pool) {
        PyErr_NoMemory();
        return -1;
    }
    self->n_threads = pool_n_threads(self->ctx.pool);
    return 0;
}

static void Kernels_dealloc(KernelsObject *self) {
    if (self->ctx.pool) {
        Py_BEGIN_ALLOW_THREADS
        pool_destroy(self->ctx.pool);
        Py_END_ALLOW_THREADS
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Kernels_get_isa(KernelsObject *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(self->ctx.kt ? isa_names[self->ctx.kt->isa] : "");
}

static PyObject *Kernels_get_n_threads(KernelsObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(self->n_threads);
}

static PyGetSetDef Kernels_getset[] = {
    {"isa", (getter)Kernels_get_isa, NULL, "the instruction set of this kernel table", NULL},
    {"n_threads", (getter)Kernels_get_n_threads, NULL, "threads a call may use, the caller included", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject KernelsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgelm._native.Kernels",
    .tp_basicsize = sizeof(KernelsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("Kernels(isa=None, n_threads=0): one ISA's kernels and a thread pool "
                        "(n_threads 0: one per physical core)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Kernels_init,
    .tp_dealloc = (destructor)Kernels_dealloc,
    .tp_methods = Kernels_methods,
    .tp_getset = Kernels_getset,
};

/* ---- module functions ---------------------------------------------------------------------------- */

static PyObject *available_isas(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int i = 0; i < ISA_COUNT; i++) {
        if (!kernels_for_isa((enum isa)i)) continue;
        PyObject *name = PyUnicode_FromString(isa_names[i]);
        if (!name || PyList_Append(list, name) != 0) {
            Py_XDECREF(name);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(name);
    }
    return list;
}

static PyObject *all_isas(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    PyObject *tuple = PyTuple_New(ISA_COUNT);
    if (!tuple) return NULL;
    for (int i = 0; i < ISA_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(isa_names[i]);
        if (!name) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, name);
    }
    return tuple;
}

static PyObject *best_isa(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyUnicode_FromString(isa_names[isa_best()]);
}

static PyObject *physical_cores(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyLong_FromLong(cpu_physical_cores());
}

static PyObject *release_free_memory(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    int released = 0;
#ifdef __GLIBC__
    Py_BEGIN_ALLOW_THREADS
    released = malloc_trim(0);
    Py_END_ALLOW_THREADS
#endif
    return PyBool_FromLong(released);
}

PyObject *native_bpe_tables(PyObject *module, PyObject *args);   /* module_bpe.c */
PyObject *native_scan_strings(PyObject *module, PyObject *args); /* module_gguf.c */

static PyMethodDef module_methods[] = {
    {"release_free_memory", release_free_memory, METH_NOARGS,
     "Give the C heap's free pages back to the system (glibc's malloc_trim); whether any were."},
    {"available_isas", available_isas, METH_NOARGS, "ISAs this build and CPU can run, slowest first."},
    {"all_isas", all_isas, METH_NOARGS, "Every ISA name the kernels know, slowest first."},
    {"best_isa", best_isa, METH_NOARGS, "The fastest ISA this CPU runs."},
    {"physical_cores", physical_cores, METH_NOARGS, "Physical cores this process may run on."},
    {"bpe_tables", native_bpe_tables, METH_VARARGS,
     "bpe_tables(token_data, token_starts, token_lengths, merge_data, merge_starts, merge_lengths, raw=False)"
     " -> (left, right, result, byte_ids, raw, offsets, n_dropped)\n\n"
     "The id tables of a byte-level BPE vocab from its strings as stored (int64 starts and lengths into "
     "each buffer): the merges whose parts and result are tokens (int32 bytes each), each byte's token, "
     "and with raw, each token's bytes (GPT-2's alphabet undone) and int64 offsets; else None."},
    {"scan_strings", native_scan_strings, METH_VARARGS,
     "scan_strings(buf, pos, count) -> (n_fit, end, bad_length, starts, lengths)\n\n"
     "Walk a GGUF string array's count length-prefixed strings from buf[pos]: how many fit, the offset "
     "after them, the length of the first that does not (None when its length field is cut off), and "
     "when all fit, their starts and lengths as int64 bytes (else None)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, .m_name = "edgelm._native",
    .m_doc = "Native kernels of edgelm: quantized matrix products, norms, RoPE, attention.", .m_size = -1,
    .m_methods = module_methods,
};

extern PyTypeObject BPEType, TextIndexType; /* module_bpe.c */

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&KernelsType) < 0 || PyType_Ready(&BPEType) < 0 || PyType_Ready(&TextIndexType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    Py_INCREF(&KernelsType);
    if (PyModule_AddObject(m, "Kernels", (PyObject *)&KernelsType) < 0) {
        Py_DECREF(&KernelsType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BPEType);
    if (PyModule_AddObject(m, "BPE", (PyObject *)&BPEType) < 0) {
        Py_DECREF(&BPEType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TextIndexType);
    if (PyModule_AddObject(m, "TextIndex", (PyObject *)&TextIndexType) < 0) {
        Py_DECREF(&TextIndexType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
