/*
 * Deadlines for guarded calls (vm.execution.watchdog is the Python side):
 *
 *   run_guarded(flag, fn, *args)        call fn with asynchronous timeouts armed only inside it
 *   raise_unless_done(flag, tid, exc)   the watchdog's side: raise exc in thread tid if still inside
 *   kill_start(tid, exc, marker)        the last resort for a script that keeps catching its timeout
 *
 * The GIL serialises run_guarded and raise_unless_done: both are C functions that run no Python
 * bytecode in between their checks and their effects, so an asynchronous exception can only be
 * delivered while the script itself runs.
 */
#include "guard.h"

enum { FLAG_RUNNING = 0, FLAG_DONE = 1, FLAG_NOT_STARTED = 2 };

static int
get_flag(PyObject *flag, char **out)
{
    if (!PyByteArray_Check(flag) || PyByteArray_GET_SIZE(flag) != 1) {
        PyErr_SetString(PyExc_TypeError, "flag must be a bytearray of length 1");
        return -1;
    }
    *out = PyByteArray_AS_STRING(flag);
    return 0;
}

/* The last resort for a script that keeps catching its timeout (a bare `except:` in a loop, a
 * context manager whose __exit__ returns True): a trace function on its thread that raises the
 * timeout again on every line of script code (frames whose builtins carry the sandbox's marker
 * key), handlers and __exit__ methods included, so script code cannot go on. Runtime frames are
 * left alone. 3.11/3.12 set it on the one thread; 3.13 no longer exports that, so it traces all
 * threads and acts only on the ones being stopped. Removed when the guarded call returns. */
static PyObject *kill_tids = NULL;   /* set of thread ids being stopped */
static PyObject *kill_exc = NULL;    /* the exception class to raise */
static PyObject *kill_marker = NULL; /* key present in every sandbox's builtins dict */

static int
kill_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what != PyTrace_CALL && what != PyTrace_LINE)
        return 0;
    PyObject *tid = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    int mine = tid ? PySet_Contains(kill_tids, tid) : -1;
    Py_XDECREF(tid);
    if (mine <= 0) {
        PyErr_Clear();
        return 0;
    }
    PyObject *builtins = PyFrame_GetBuiltins(frame);
    int script = builtins && PyDict_Check(builtins) && PyDict_GetItemWithError(builtins, kill_marker) != NULL;
    Py_XDECREF(builtins);
    if (!script) {
        PyErr_Clear();
        return 0;
    }
    PyErr_SetString(kill_exc, "the call ran past its deadline and was stopped");
    return -1;
}

static PyThreadState *
find_thread(unsigned long tid)
{
    PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
    for (; t != NULL; t = PyThreadState_Next(t))
        if (t->thread_id == tid)
            return t;
    return NULL;
}

static PyObject *
kill_start(PyObject *self, PyObject *args)
{
    unsigned long tid;
    PyObject *exc, *marker;
    if (!PyArg_ParseTuple(args, "kOU", &tid, &exc, &marker))
        return NULL;
    if (kill_tids == NULL && (kill_tids = PySet_New(NULL)) == NULL)
        return NULL;
    Py_XSETREF(kill_exc, Py_NewRef(exc));
    Py_XSETREF(kill_marker, Py_NewRef(marker));
    PyObject *key = PyLong_FromUnsignedLong(tid);
    if (key == NULL || PySet_Add(kill_tids, key) < 0) {
        Py_XDECREF(key);
        return NULL;
    }
    Py_DECREF(key);
#if PY_VERSION_HEX >= 0x030D0000
    PyEval_SetTraceAllThreads(kill_trace, NULL);
#else
    PyThreadState *t = find_thread(tid);
    if (t == NULL)
        Py_RETURN_FALSE;
    if (_PyEval_SetTrace(t, kill_trace, NULL) < 0)
        return NULL;
#endif
    Py_RETURN_TRUE;
}

/* Called by run_guarded on its own thread once the call is over. */
static void
kill_stop_current(void)
{
    if (kill_tids == NULL || PySet_GET_SIZE(kill_tids) == 0)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *key = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (key != NULL && PySet_Discard(kill_tids, key) == 1) {
#if PY_VERSION_HEX >= 0x030D0000
        if (PySet_GET_SIZE(kill_tids) == 0)
            PyEval_SetTraceAllThreads(NULL, NULL);
#else
        PyEval_SetTrace(NULL, NULL);
#endif
    }
    Py_XDECREF(key);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

static PyObject *
run_guarded(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *flag;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "run_guarded(flag, fn, *args)");
        return NULL;
    }
    if (get_flag(args[0], &flag) < 0)
        return NULL;
    PyObject *fn = args[1];
    Py_INCREF(args[0]);
    flag[0] = FLAG_RUNNING;
    PyObject *res = PyObject_Vectorcall(fn, args + 2, (size_t)(nargs - 2), NULL);
    flag[0] = FLAG_DONE;
    /* Drop an asynchronous exception that was set but not yet delivered. */
    PyThreadState_SetAsyncExc((unsigned long)PyThread_get_thread_ident(), NULL);
    kill_stop_current();
    Py_DECREF(args[0]);
    return res;
}

static PyObject *
raise_unless_done(PyObject *self, PyObject *args)
{
    PyObject *flagobj, *exc;
    unsigned long tid;
    char *flag;
    if (!PyArg_ParseTuple(args, "OkO", &flagobj, &tid, &exc))
        return NULL;
    if (get_flag(flagobj, &flag) < 0)
        return NULL;
    if (flag[0] != FLAG_RUNNING)
        Py_RETURN_FALSE;
    int n = PyThreadState_SetAsyncExc(tid, exc);
    return PyBool_FromLong(n == 1);
}

PyMethodDef guard_deadline_methods[] = {
    {"run_guarded", (PyCFunction)(void (*)(void))run_guarded, METH_FASTCALL,
     "run_guarded(flag, fn, *args): call fn(*args); asynchronous exceptions are only delivered inside."},
    {"raise_unless_done", raise_unless_done, METH_VARARGS,
     "raise_unless_done(flag, thread_id, exc) -> bool: raise exc in the thread if its guarded call runs."},
    {"kill_start", kill_start, METH_VARARGS,
     "kill_start(thread_id, exc, marker_key): stop the script code running on that thread (see kill_trace)."},
    {NULL, NULL, 0, NULL},
};
