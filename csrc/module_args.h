/* What the files of the edgelm._native module share: the Kernels object, the argument helpers, and
 * the methods defined outside module.c. */
#ifndef EDGELM_MODULE_ARGS_H
#define EDGELM_MODULE_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "edgelm_ops.h"

typedef struct {
    PyObject_HEAD
    struct edgelm_ctx ctx;
    int n_threads;
} KernelsObject;

/* A C-contiguous buffer of `itemsize`-byte items (writable if asked); -1 with an exception set. */
int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name);
Py_ssize_t n_items(const Py_buffer *view);
/* -1 with an exception set unless the buffer holds `want` items. */
int check_items(const Py_buffer *view, long long want, const char *name);
int get_ll(PyObject *obj, long long *out, const char *name);
int check_nargs(Py_ssize_t nargs, Py_ssize_t want, const char *fn);
/* The Python exception of a kernel's errno value; always NULL. */
PyObject *raise_errno(int err);
/* A weight matrix from (buffer, type, n_rows, k) in `layout`, its byte count checked. */
int get_qmatrix(PyObject *const *args, Py_buffer *view, struct qmatrix *w, int layout);

/* Buffers taken for one call (or held by an object), released together. */
#define MAX_BUFFERS 16
struct buffers {
    Py_buffer views[MAX_BUFFERS];
    int n;
};
void release_buffers(struct buffers *bs);
/* The data of a float32 (or `itemsize`) buffer of exactly `want` items, kept in bs; NULL for None when
 * optional.  -1 with an exception set on failure. */
int take(struct buffers *bs, PyObject *obj, Py_ssize_t itemsize, int writable, long long want, int optional,
         const char *name, void **out);
/* A weight (buffer, type, n_rows, k, layout) tuple as a qmatrix, its buffer kept in bs. */
int take_matrix(struct buffers *bs, PyObject *obj, struct qmatrix *w, const char *name);
/* The number of `itemsize`-byte items in a buffer (looked at, not kept); -1 with an exception set. */
int count_items(PyObject *obj, Py_ssize_t itemsize, const char *name, long long *n);
/* A writable f16 cache of rows of `width` that holds at least n_keys of them, kept in bs. */
int take_cache(struct buffers *bs, PyObject *obj, long long width, long long n_keys, const char *name, void **out);
/* The optional vectors of q/k/v (biases, per-head norms, RoPE factors) into a, whose head counts and
 * widths (and rope_dim) are set; None leaves NULL. */
int take_qkv_vectors(struct buffers *bs, PyObject *bq, PyObject *bk, PyObject *bv, PyObject *q_norm, PyObject *k_norm,
                     PyObject *factors, struct qkv_args *a);

/* A method's docstring, defined where the method is. */
#define MODULE_DOC(name, text) const char name[] = text

/* module_blocks.c */
PyObject *Kernels_read_rows(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_qkv(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_ffn(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_r16_supported(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_repack_r16(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_r16_row_bytes(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_attention_cached(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
extern const char read_rows_doc[], qkv_doc[], ffn_doc[], r16_supported_doc[], repack_r16_doc[], r16_row_bytes_doc[],
    attention_cached_doc[];

/* module_plan.c */
PyObject *Kernels_block_plan(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Kernels_block(KernelsObject *self, PyObject *const *args, Py_ssize_t nargs);
extern const char block_plan_doc[], block_doc[];

#endif
