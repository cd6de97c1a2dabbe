/* edgelm._native.scan_strings: where the strings of a GGUF string array lie (see gguf_strings.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "gguf_strings.h"

PyObject *native_scan_strings(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *buf_o;
    long long pos, count;
    if (!PyArg_ParseTuple(args, "OLL:scan_strings", &buf_o, &pos, &count)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buf_o, &view, PyBUF_C_CONTIGUOUS) != 0) return NULL;
    PyObject *out = NULL, *starts = NULL, *lengths = NULL;
    if (pos < 0 || pos > view.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "scan_strings: pos must lie in the buffer and count be >= 0");
        goto done;
    }
    struct gguf_scan s;
    Py_BEGIN_ALLOW_THREADS
    s = gguf_scan_strings(view.buf, view.len, pos, count, NULL, NULL);
    Py_END_ALLOW_THREADS
    if (s.n_fit == count) {
        /* a second walk fills arrays of the size now known: a damaged count allocates nothing */
        starts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)count * 8);
        lengths = starts ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)count * 8) : NULL;
        if (!lengths) goto done;
        int64_t *st = (int64_t *)PyBytes_AS_STRING(starts), *ln = (int64_t *)PyBytes_AS_STRING(lengths);
        Py_BEGIN_ALLOW_THREADS
        gguf_scan_strings(view.buf, view.len, pos, count, st, ln);
        Py_END_ALLOW_THREADS
    } else {
        starts = Py_NewRef(Py_None);
        lengths = Py_NewRef(Py_None);
    }
    PyObject *bad = s.has_bad_length ? PyLong_FromUnsignedLongLong(s.bad_length) : Py_NewRef(Py_None);
    if (bad) out = Py_BuildValue("(LLNOO)", (long long)s.n_fit, (long long)s.end, bad, starts, lengths);
done:
    Py_XDECREF(starts);
    Py_XDECREF(lengths);
    PyBuffer_Release(&view);
    return out;
}
