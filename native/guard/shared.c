/*
 * Library state a script must not reach in thread mode, where every bundle and the host share one
 * interpreter:
 *
 *   freeze_object(obj)   no attribute of obj can be set or deleted any more (a shared library
 *                        function: json.loads.note = ... would reach every bundle), whoever asks
 */
#include "guard.h"

/* Objects whose attributes are frozen, by address (held, so an address is never reused). Their
 * types' tp_setattro becomes guarded_setattro, which refuses for them and is the generic one for
 * every other object; PyType_Modified drops STORE_ATTR sites the interpreter specialised on the
 * type, and it does not specialise stores on a type whose tp_setattro is not the generic one.
 * Only objects with an instance dict whose type has the generic tp_setattro take part: functions,
 * numpy's dispatchers and ufuncs, plain instances (dataclasses.MISSING); others either refuse
 * attribute stores already (no dict) or run their own __setattr__. */
static PyObject *frozen = NULL; /* dict: id -> obj */

static int
guarded_setattro(PyObject *obj, PyObject *name, PyObject *value)
{
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (key == NULL)
        return -1;
    int hit = PyDict_Contains(frozen, key);
    Py_DECREF(key);
    if (hit < 0)
        return -1;
    if (hit) {
        PyErr_Format(PyExc_TypeError, "cannot %s attribute %R of a shared library object (%s)",
                     value ? "set" : "delete", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    return PyObject_GenericSetAttr(obj, name, value);
}

static PyObject *freeze_object_locked(PyObject *obj);

/* Serialises freezing (without a GIL, two threads could both create `frozen`, or both swap one type's
 * tp_setattro); guarded_setattro only reads `frozen`, published before any type points at it. */
static PyObject *
freeze_object(PyObject *self, PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    static PyMutex lock;
    PyMutex_Lock(&lock);
#endif
    PyObject *res = freeze_object_locked(obj);
#if PY_VERSION_HEX >= 0x030D0000
    PyMutex_Unlock(&lock);
#endif
    return res;
}

static PyObject *
freeze_object_locked(PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (PyType_Check(obj) || (tp->tp_dictoffset == 0 && !(tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)) ||
        (tp->tp_setattro != PyObject_GenericSetAttr && tp->tp_setattro != guarded_setattro))
        Py_RETURN_FALSE;
    if (frozen == NULL && (frozen = PyDict_New()) == NULL)
        return NULL;
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (key == NULL)
        return NULL;
    int rc = PyDict_SetItem(frozen, key, obj);
    Py_DECREF(key);
    if (rc < 0)
        return NULL;
    if (tp->tp_setattro != guarded_setattro) {
        __atomic_store_n(&tp->tp_setattro, guarded_setattro, __ATOMIC_RELEASE);
        PyType_Modified(tp);
    }
    Py_RETURN_TRUE;
}

PyMethodDef guard_shared_methods[] = {
    {"freeze_object", freeze_object, METH_O,
     "freeze_object(obj) -> bool: make obj's attributes read-only for good (False: its type cannot be)."},
    {NULL, NULL, 0, NULL},
};
