/* edgelm._native.BPE: the merge tables of a byte-level BPE vocab, and `encode(words)`; bpe_tables, which
 * reads those tables from the vocab's strings; TextIndex, token text -> id over the strings as stored. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "bpe.h"
#include "text_index.h"

typedef struct {
    PyObject_HEAD struct bpe *bpe;
    Py_buffer tokens, offsets; /* kept for whole-word lookups (ignore_merges) */
    int has_words;
} BPEObject;

static int int_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous buffer", name);
        return -1;
    }
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s must have items of %zd bytes", name, itemsize);
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
    if (int_buffer(left_o, &l, 4, "BPE: left")) return -1;
    if (int_buffer(right_o, &r, 4, "BPE: right")) goto fail_l;
    if (int_buffer(result_o, &res, 4, "BPE: result")) goto fail_r;
    if (int_buffer(bytes_o, &by, 4, "BPE: byte_ids")) goto fail_res;
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
        if (int_buffer(tokens_o, &self->tokens, 1, "BPE: tokens")) goto fail_by;
        if (int_buffer(offsets_o, &self->offsets, 8, "BPE: offsets")) {
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

/* ---- bpe_tables: the id tables from the vocab's strings, read where they are stored ------------- */

/* The strings (buffer, starts, lengths) as packed_strings; views[3] hold the buffers until released. */
static int strings_arg(PyObject *data_o, PyObject *starts_o, PyObject *lengths_o, const char *name, Py_buffer views[3],
                       struct packed_strings *s) {
    if (PyObject_GetBuffer(data_o, &views[0], PyBUF_C_CONTIGUOUS) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: data must be a C-contiguous buffer", name);
        return -1;
    }
    char what[64];
    snprintf(what, sizeof what, "%s: starts", name);
    if (int_buffer(starts_o, &views[1], 8, what)) goto fail_data;
    snprintf(what, sizeof what, "%s: lengths", name);
    if (int_buffer(lengths_o, &views[2], 8, what)) goto fail_starts;
    s->data = views[0].buf;
    s->starts = views[1].buf;
    s->lengths = views[2].buf;
    s->n = views[1].len / 8;
    if (views[2].len / 8 != s->n) {
        PyErr_Format(PyExc_ValueError, "%s: starts and lengths differ in length", name);
        goto fail_lengths;
    }
    if (!packed_strings_valid(s, views[0].len)) {
        PyErr_Format(PyExc_ValueError, "%s: the spans must lie inside the buffer", name);
        goto fail_lengths;
    }
    return 0;
fail_lengths:
    PyBuffer_Release(&views[2]);
fail_starts:
    PyBuffer_Release(&views[1]);
fail_data:
    PyBuffer_Release(&views[0]);
    return -1;
}

static PyObject *bytes_of(const void *p, int64_t n_items, size_t item) {
    return PyBytes_FromStringAndSize(p, (Py_ssize_t)((size_t)n_items * item));
}

PyObject *native_bpe_tables(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *td, *ts, *tl, *md, *ms, *ml;
    int want_raw = 0;
    if (!PyArg_ParseTuple(args, "OOOOOO|p:bpe_tables", &td, &ts, &tl, &md, &ms, &ml, &want_raw)) return NULL;
    Py_buffer tv[3], mv[3];
    struct packed_strings tokens, merges;
    if (strings_arg(td, ts, tl, "bpe_tables (tokens)", tv, &tokens)) return NULL;
    if (strings_arg(md, ms, ml, "bpe_tables (merges)", mv, &merges)) {
        for (int i = 0; i < 3; i++) PyBuffer_Release(&tv[i]);
        return NULL;
    }
    PyObject *out = NULL;
    struct bpe_tables t;
    int rc;
    if (tokens.n >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "bpe_tables: too many tokens for 32-bit ids");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = bpe_tables_build(&tokens, &merges, want_raw, &t);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_NoMemory();
        goto done;
    }
    /* (left, right, result, byte_ids, raw or None, offsets or None, n_dropped) */
    out = PyTuple_New(7);
    if (!out) goto free_tables;
    PyObject *items[7] = {
        bytes_of(t.left, t.n_merges, 4),
        bytes_of(t.right, t.n_merges, 4),
        bytes_of(t.result, t.n_merges, 4),
        bytes_of(t.byte_ids, 256, 4),
        want_raw ? bytes_of(t.raw, t.offsets[tokens.n], 1) : Py_NewRef(Py_None),
        want_raw ? bytes_of(t.offsets, tokens.n + 1, sizeof *t.offsets) : Py_NewRef(Py_None),
        PyLong_FromLongLong(t.n_dropped),
    };
    for (int i = 0; i < 7; i++) {
        if (!items[i]) Py_CLEAR(out);
        if (out)
            PyTuple_SET_ITEM(out, i, items[i]);
        else
            Py_XDECREF(items[i]);
    }
free_tables:
    bpe_tables_free(&t);
done:
    for (int i = 0; i < 3; i++) {
        PyBuffer_Release(&tv[i]);
        PyBuffer_Release(&mv[i]);
    }
    return out;
}

/* ---- TextIndex ----------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD Py_buffer views[3]; /* the strings, read by every lookup */
    struct packed_strings strings;
    struct text_index index;
    Py_ssize_t first_not_c_string;
    int ready;
} TextIndexObject;

static int TextIndex_init(TextIndexObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"data", "starts", "lengths", NULL};
    PyObject *data_o, *starts_o, *lengths_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO", kwlist, &data_o, &starts_o, &lengths_o)) return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "TextIndex is already initialized");
        return -1;
    }
    if (strings_arg(data_o, starts_o, lengths_o, "TextIndex", self->views, &self->strings)) return -1;
    const struct packed_strings *s = &self->strings;
    if (s->n >= INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "TextIndex: too many strings for 32-bit ids");
        goto fail;
    }
    int rc;
    int64_t odd = -1;
    Py_BEGIN_ALLOW_THREADS
    rc = text_index_build(&self->index, s, 0);
    for (int64_t i = 0; odd < 0 && i < s->n; i++)
        if (s->lengths[i] == 0 || memchr(s->data + s->starts[i], 0, (size_t)s->lengths[i])) odd = i;
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_NoMemory();
        goto fail;
    }
    self->first_not_c_string = (Py_ssize_t)odd;
    self->ready = 1;
    return 0;
fail:
    for (int i = 0; i < 3; i++) PyBuffer_Release(&self->views[i]);
    return -1;
}

static void TextIndex_dealloc(TextIndexObject *self) {
    if (self->ready) {
        text_index_free(&self->index);
        for (int i = 0; i < 3; i++) PyBuffer_Release(&self->views[i]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *TextIndex_find(TextIndexObject *self, PyObject *text) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "TextIndex is not initialized");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(text, &view, PyBUF_C_CONTIGUOUS) != 0) return NULL;
    const int32_t id = text_index_find(&self->index, view.buf, view.len, NULL, 0);
    PyBuffer_Release(&view);
    return PyLong_FromLong(id);
}

static PyObject *TextIndex_first_duplicate(TextIndexObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(self->ready ? self->index.first_duplicate : -1);
}

static PyObject *TextIndex_first_not_c_string(TextIndexObject *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->ready ? self->first_not_c_string : -1);
}

static PyMethodDef TextIndex_methods[] = {
    {"find", (PyCFunction)TextIndex_find, METH_O,
     "find(text: bytes) -> int: the first id whose stored bytes are `text`, or -1."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TextIndex_getset[] = {
    {"first_duplicate", (getter)TextIndex_first_duplicate, NULL,
     "The first id whose bytes an earlier id has, or -1.", NULL},
    {"first_not_c_string", (getter)TextIndex_first_not_c_string, NULL,
     "The first id whose bytes are empty or hold a NUL (they read otherwise as a C string), or -1.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject TextIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "edgelm._native.TextIndex",
    .tp_basicsize = sizeof(TextIndexObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = PyDoc_STR("TextIndex(data, starts, lengths): id by stored bytes over strings left in a buffer "
                        "(string i is data[starts[i]:starts[i] + lengths[i]], int64 starts and lengths)."),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TextIndex_init,
    .tp_dealloc = (destructor)TextIndex_dealloc,
    .tp_methods = TextIndex_methods,
    .tp_getset = TextIndex_getset,
};
