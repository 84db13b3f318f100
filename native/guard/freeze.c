/*
 * freeze_type(cls): make a shared library class immutable, so that no script can monkeypatch a class
 * the runtime or another bundle uses (the vetted library's classes, and classes reached via type()).
 */
#include "guard.h"

static PyObject *
freeze_type(PyObject *self, PyObject *arg)
{
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "freeze_type expects a class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)arg;
    if ((tp->tp_flags & Py_TPFLAGS_HEAPTYPE) && !(tp->tp_flags & Py_TPFLAGS_IMMUTABLETYPE)) {
        tp->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE;
        PyType_Modified(tp);
    }
    Py_RETURN_NONE;
}

PyMethodDef guard_freeze_methods[] = {
    {"freeze_type", freeze_type, METH_O, "Make a heap class immutable (attributes cannot be set)."},
    {NULL, NULL, 0, NULL},
};
