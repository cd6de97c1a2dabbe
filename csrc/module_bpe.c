/* edgelm._native.BPE: the merge tables of a byte-level BPE vocab, and `encode(words)`. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "bpe.h"

typedef struct {
    PyObject_HEAD struct bpe *bpe;
    Py_buffer tokens, offsets; /* kept for whole-word lookups (ignore_merges) */
    int has_words;
} BPEObject;

static int int_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Format(PyExc_TypeError, "BPE: %s must be a C-contiguous buffer", name);
        return -1;
    }
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "BPE: %s must have items of %zd bytes", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int BPE_init(BPEObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"left", "right", "result", "byte_ids", "tokens", "offsets", "ignore_merges", NULL};
    PyObject *left_o, *right_o, *result_o, *bytes_o, *tokens_o = Py_None, *offsets_o = Py_None;
    int ignore_merges = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|OOp", kwlist, &left_o, &right_o, &result_o, &bytes_o,
                                     &tokens_o, &offsets_o, &ignore_merges))
        return -1;
    if (self->bpe) {
        PyErr_SetString(PyExc_RuntimeError, "BPE is already initialized");
        return -1;
    }
    Py_buffer l, r, res, by;
    if (int_buffer(left_o, &l, 4, "left")) return -1;
    if (int_buffer(right_o, &r, 4, "right")) goto fail_l;
    if (int_buffer(result_o, &res, 4, "result")) goto fail_r;
    if (int_buffer(bytes_o, &by, 4, "byte_ids")) goto fail_res;
    const Py_ssize_t n_merges = l.len / 4;
    if (r.len / 4 != n_merges || res.len / 4 != n_merges || by.len / 4 != 256) {
        PyErr_SetString(PyExc_ValueError, "BPE: left/right/result must have one length, byte_ids 256 values");
        goto fail_by;
    }
    int64_t n_tokens = 0;
    if (ignore_merges) {
        if (tokens_o == Py_None || offsets_o == Py_None) {
            PyErr_SetString(PyExc_ValueError, "BPE: ignore_merges needs tokens and offsets");
            goto fail_by;
        }
        if (int_buffer(tokens_o, &self->tokens, 1, "tokens")) goto fail_by;
        if (int_buffer(offsets_o, &self->offsets, 8, "offsets")) {
            PyBuffer_Release(&self->tokens);
            goto fail_by;
        }
        self->has_words = 1;
        n_tokens = self->offsets.len / 8 - 1;
        const int64_t *offs = self->offsets.buf;
        int ok = n_tokens >= 0 && (n_tokens == 0 || offs[0] >= 0);
        for (int64_t t = 0; ok && t < n_tokens; t++) ok = offs[t] <= offs[t + 1];
        if (!ok || (n_tokens > 0 && offs[n_tokens] > self->tokens.len)) {
            PyErr_SetString(PyExc_ValueError, "BPE: offsets must rise within the tokens buffer");
            goto fail_by;
        }
    }
    const int32_t *li = l.buf, *ri = r.buf, *resi = res.buf;
    for (Py_ssize_t m = 0; m < n_merges; m++) {
        if (li[m] < 0 || ri[m] < 0 || resi[m] < 0) {
            PyErr_Format(PyExc_ValueError, "BPE: merge %zd has a negative id", m);
            goto fail_by;
        }
    }
    self->bpe = bpe_create(li, ri, resi, n_merges, by.buf, self->has_words ? self->tokens.buf : NULL,
                           self->has_words ? self->offsets.buf : NULL, n_tokens, ignore_merges);
    PyBuffer_Release(&by);
    PyBuffer_Release(&res);
    PyBuffer_Release(&r);
    PyBuffer_Release(&l);
    if (!self->bpe) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
fail_by:
    PyBuffer_Release(&by);
fail_res:
    PyBuffer_Release(&res);
fail_r:
    PyBuffer_Release(&r);
fail_l:
    PyBuffer_Release(&l);
    return -1;
}

static void BPE_dealloc(BPEObject *self) {
    bpe_destroy(self->bpe);
    if (self->has_words) {
        PyBuffer_Release(&self->tokens);
        PyBuffer_Release(&self->offsets);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(encode_doc, "encode(words) -> list[int]\n--\n\n"
                         "The token ids of each word (a str, tokenized as its UTF-8 bytes), concatenated. "
                         "A word may also be a tuple whose first item is the str (a pre-tokenizer's "
                         "(piece, offsets)).");

/* The str of a word: the word itself, or the first item of a (str, ...) tuple; NULL if neither. */
static PyObject *word_of(PyObject *item) {
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) > 0) item = PyTuple_GET_ITEM(item, 0);
    return PyUnicode_Check(item) ? item : NULL;
}

static PyObject *BPE_encode(BPEObject *self, PyObject *words) {
    if (!self->bpe) {
        PyErr_SetString(PyExc_RuntimeError, "BPE is not initialized");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(words, "BPE.encode: words must be a sequence of str");
    if (!seq) return NULL;
    const Py_ssize_t n_words = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        Py_ssize_t n;
        PyObject *word = word_of(items[i]);
        if (!word || !PyUnicode_AsUTF8AndSize(word, &n)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "BPE.encode: words must be str or (str, ...) tuples");
            Py_DECREF(seq);
            return NULL;
        }
        total += n;
    }
    int32_t *ids = PyMem_Malloc((size_t)(total > 0 ? total : 1) * sizeof *ids);
    if (!ids) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    int64_t n_ids = 0;
    for (Py_ssize_t i = 0; i < n_words; i++) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(word_of(items[i]), &n);
        const int64_t got = bpe_encode_word(self->bpe, (const uint8_t *)utf8, n, ids + n_ids);
        if (got < 0) {
            PyMem_Free(ids);
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
        n_ids += got;
    }
    Py_DECREF(seq);
    PyObject *out = PyList_New((Py_ssize_t)n_ids);
    if (out) {
        for (int64_t i = 0; i < n_ids; i++) {
            PyObject *v = PyLong_FromLong(ids[i]);
            if (!v) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, (Py_ssize_t)i, v);
        }
    }
    PyMem_Free(ids);
    return out;
}

static PyMethodDef BPE_methods[] = {
    {"encode", (PyCFunction)BPE_encode, METH_O, encode_doc},
    {NULL, NULL, 0, NULL},
};

PyTypeObject BPEType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgelm._native.BPE",
    .tp_basicsize = sizeof(BPEObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("BPE(left, right, result, byte_ids, tokens=None, offsets=None, ignore_merges=False): "
                        "byte-level BPE merges (rank = index) over token ids."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)BPE_init,
    .tp_dealloc = (destructor)BPE_dealloc,
    .tp_methods = BPE_methods,
};
