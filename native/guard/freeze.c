/*
 * freeze_type(cls): make a shared library class immutable, so that no script can monkeypatch a class
 * the runtime or another bundle uses (the vetted library's classes, and classes reached via type()).
 */
#include "guard.h"

#ifdef Py_GIL_DISABLED
/* Free-threaded CPython changes tp_flags only under its type lock (other threads read them without
 * it), which has no public API. PyType_Modified takes that lock and, holding it, calls the type's
 * watchers: so a watcher of our own, on the one type being frozen, sets the flag under the lock. */
static int watcher_id = -1;
static _Thread_local PyTypeObject *freezing = NULL;

static int
freeze_watcher(PyTypeObject *tp)
{
    if (tp == freezing)
        __atomic_store_n(&tp->tp_flags, tp->tp_flags | Py_TPFLAGS_IMMUTABLETYPE, __ATOMIC_RELAXED);
    return 0;
}

static int
set_immutable_locked(PyTypeObject *tp)
{
    static PyMutex lock;
    PyMutex_Lock(&lock);
    if (watcher_id < 0)
        watcher_id = PyType_AddWatcher(freeze_watcher);
    PyMutex_Unlock(&lock);
    if (watcher_id < 0)
        return -1;
    if (PyType_Watch(watcher_id, (PyObject *)tp) < 0)
        return -1;
    freezing = tp;
    /* PyType_Modified skips a type without a version tag (nothing cached it yet), so it gets one; a
     * write to the class on another thread may drop it again before we get the lock: then retry. */
    for (int tries = 0; tries < 1000 && !(PyType_GetFlags(tp) & Py_TPFLAGS_IMMUTABLETYPE); tries++) {
        if (PyUnstable_Type_AssignVersionTag(tp))
            PyType_Modified(tp);
    }
    freezing = NULL;
    /* The watcher id is ours alone: unwatching clears only our bit. */
    PyType_Unwatch(watcher_id, (PyObject *)tp);
    if (!(PyType_GetFlags(tp) & Py_TPFLAGS_IMMUTABLETYPE)) {
        PyErr_Format(PyExc_RuntimeError, "cannot freeze class %s", tp->tp_name);
        return -1;
    }
    return 0;
}
#endif

static PyObject *
freeze_type(PyObject *self, PyObject *arg)
{
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "freeze_type expects a class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)arg;
    if ((PyType_GetFlags(tp) & Py_TPFLAGS_HEAPTYPE) && !(PyType_GetFlags(tp) & Py_TPFLAGS_IMMUTABLETYPE)) {
#ifdef Py_GIL_DISABLED
        if (set_immutable_locked(tp) < 0)
            return NULL;
#else
        tp->tp_flags |= Py_TPFLAGS_IMMUTABLETYPE; /* the GIL is held: nothing else writes tp_flags now */
        PyType_Modified(tp);
#endif
    }
    Py_RETURN_NONE;
}

PyMethodDef guard_freeze_methods[] = {
    {"freeze_type", freeze_type, METH_O, "Make a heap class immutable (attributes cannot be set)."},
    {NULL, NULL, 0, NULL},
};
