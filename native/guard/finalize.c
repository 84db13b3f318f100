/*
 * Script generators are finalized only inside their own bundle's guarded call:
 *
 *   guard_finalizers(marker)   install, once: marker is the key every sandbox's builtins dict holds
 *
 * A suspended generator (or coroutine, or async generator) runs its `finally` and `except` handlers
 * when it is finalized. Dropped by reference count, that happens where the script let go of it, inside
 * its own call. Left in a reference cycle, it happens whenever the cycle collector gets to it: on the
 * host's thread, inside another bundle's call, in the runtime's own code, outside the call's deadline
 * and memory budget, and no name check can see it coming. So the three types' tp_finalize goes through
 * script_aware_finalize: a generator whose frame is script code (its builtins carry the marker) is
 * closed only when this thread is inside a guarded call whose innermost script frame belongs to the
 * same sandbox (the same builtins dict); anywhere else it is discarded without running its handlers,
 * as CPython does with a generator still suspended at interpreter exit. Other generators (the host's,
 * the runtime's, the libraries') are finalized as before.
 */
#include "guard.h"

static destructor gen_finalize = NULL, coro_finalize = NULL, asyncgen_finalize = NULL;
static PyObject *script_marker = NULL; /* set once by guard_finalizers, never released */

/* The builtins of a frame if they mark it as script code (a new reference), else NULL. */
static PyObject *
script_builtins(PyFrameObject *frame)
{
    PyObject *builtins = PyFrame_GetBuiltins(frame);
    if (builtins == NULL || !PyDict_Check(builtins) || PyDict_GetItemWithError(builtins, script_marker) == NULL) {
        Py_XDECREF(builtins);
        PyErr_Clear();
        return NULL;
    }
    return builtins;
}

/* The builtins of the innermost script frame running on this thread (a new reference), or NULL. */
static PyObject *
running_script_builtins(void)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    Py_XINCREF(frame);
    while (frame != NULL) {
        PyObject *builtins = script_builtins(frame);
        if (builtins != NULL) {
            Py_DECREF(frame);
            return builtins;
        }
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    return NULL;
}

/* May this generator's handlers run here? 1 if it is not script code or this is its own call. */
static int
may_run_handlers(PyObject *self, const char *frame_attr)
{
    PyObject *frame = PyObject_GetAttrString(self, frame_attr);
    if (frame == NULL || !PyFrame_Check(frame)) { /* finished or never started: nothing runs */
        Py_XDECREF(frame);
        PyErr_Clear();
        return 1;
    }
    PyObject *own = script_builtins((PyFrameObject *)frame);
    Py_DECREF(frame);
    if (own == NULL)
        return 1;
    PyObject *running = guard_call_deadline != 0 ? running_script_builtins() : NULL;
    int same = running == own;
    Py_XDECREF(running);
    Py_DECREF(own);
    return same;
}

static void
finalize_with(PyObject *self, destructor original, const char *frame_attr)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int run = script_marker == NULL || may_run_handlers(self, frame_attr);
    PyErr_Restore(type, value, tb);
    if (run)
        original(self);
}

static void
gen_finalize_guarded(PyObject *self)
{
    finalize_with(self, gen_finalize, "gi_frame");
}

static void
coro_finalize_guarded(PyObject *self)
{
    finalize_with(self, coro_finalize, "cr_frame");
}

static void
asyncgen_finalize_guarded(PyObject *self)
{
    finalize_with(self, asyncgen_finalize, "ag_frame");
}

static PyObject *
guard_finalizers(PyObject *self, PyObject *marker)
{
    if (!PyUnicode_CheckExact(marker)) {
        PyErr_SetString(PyExc_TypeError, "marker must be a str");
        return NULL;
    }
    if (script_marker != NULL) {
        if (PyUnicode_Compare(marker, script_marker) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "the finalizer guard is installed with another marker");
            return NULL;
        }
        Py_RETURN_NONE;
    }
    script_marker = Py_NewRef(marker);
    gen_finalize = PyGen_Type.tp_finalize;
    coro_finalize = PyCoro_Type.tp_finalize;
    asyncgen_finalize = PyAsyncGen_Type.tp_finalize;
    PyGen_Type.tp_finalize = gen_finalize_guarded;
    PyCoro_Type.tp_finalize = coro_finalize_guarded;
    PyAsyncGen_Type.tp_finalize = asyncgen_finalize_guarded;
    Py_RETURN_NONE;
}

PyMethodDef guard_finalize_methods[] = {
    {"guard_finalizers", guard_finalizers, METH_O,
     "guard_finalizers(marker): script generators run their handlers only inside their own bundle's call."},
    {NULL, NULL, 0, NULL},
};
