/*
 * Deadlines for guarded calls (vm.execution.watchdog is the Python side):
 *
 *   run_guarded(flag, deadline, exc, fn, *args)
 *                                       call fn with asynchronous timeouts armed only inside it
 *   raise_unless_done(flag, tid, exc)   the watchdog's side: raise exc in thread tid if still inside
 *   kill_start(tid, exc, marker)        the last resort for a script that keeps catching its timeout
 *
 * The hand-off lock (below) serialises run_guarded's state changes and raise_unless_done's check and
 * raise: raise_unless_done only raises while the flag says the call runs, and run_guarded marks it
 * done under the same lock, so an asynchronous exception can only be delivered while the script itself
 * runs; one raised just as the call returned is already pending when the flag changes and is dropped
 * before run_guarded returns (drop_late_timeout), so it never surfaces in the runtime's own code.
 * (Before 3.13 the GIL alone serialised them; a free-threaded build has no GIL.)
 *
 * An asynchronous exception waits for the next bytecode, and the watchdog (Python) cannot even run
 * while one C call holds the GIL (a product of huge integers, a container filled from a C iterator).
 * So run_guarded also publishes the call's deadline to the allocator hooks (budget.c), which refuse
 * this thread's large allocations once it has passed: a C call that keeps allocating fails soon after
 * the deadline, and run_guarded raises exc (the timeout) in place of whatever the call made of that
 * MemoryError on its way out.
 */
#include "guard.h"

_Thread_local double guard_call_deadline = 0;
_Thread_local int guard_late_refused = 0;

enum { FLAG_RUNNING = 0, FLAG_DONE = 1, FLAG_NOT_STARTED = 2 };

/* PyMutex (3.13+) detaches the waiting thread from the interpreter, so waiting for it never blocks a
 * stop-the-world pause that another thread holding it is waiting for. Before 3.13 the GIL serialises. */
#if PY_VERSION_HEX >= 0x030D0000
static PyMutex handoff_lock; /* the flags of guarded calls, against raise_unless_done */
static PyMutex kill_lock;    /* kill_tids, kill_exc, kill_marker and switching the trace function */
#define LOCK(m) PyMutex_Lock(&(m))
#define UNLOCK(m) PyMutex_Unlock(&(m))
#else
#define LOCK(m) ((void)0)
#define UNLOCK(m) ((void)0)
#endif
/* This thread holds kill_lock: Python code it runs meanwhile (an audit hook called by
 * PyEval_SetTraceAllThreads) is not traced, or kill_trace would wait for the lock forever. */
static _Thread_local int holding_kill_lock = 0;
#define KILL_LOCK() (LOCK(kill_lock), holding_kill_lock = 1)
#define KILL_UNLOCK() (holding_kill_lock = 0, UNLOCK(kill_lock))

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
 * threads and acts only on the ones being stopped. Removed when the guarded call returns, and the
 * trace function it displaced on each thread is put back (see displaced, below). */
static PyObject *kill_tids = NULL;   /* set of thread ids being stopped */
static PyObject *kill_exc = NULL;    /* the exception class to raise */
static PyObject *kill_marker = NULL; /* key present in every sandbox's builtins dict */

static int take_displaced(unsigned long tid, Py_tracefunc *func, PyObject **obj);
static int restore_own(Py_tracefunc func, PyObject *obj);

static int
kill_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (holding_kill_lock)
        return 0;
    unsigned long me = PyThread_get_thread_ident();
    PyObject *tid = PyLong_FromUnsignedLong(me);
    PyObject *exc = NULL, *marker = NULL;
    Py_tracefunc own = NULL;
    PyObject *own_obj = NULL;
    KILL_LOCK();
    int mine = tid && kill_tids ? PySet_Contains(kill_tids, tid) : -1;
    if (mine > 0) {
        exc = Py_NewRef(kill_exc);
        marker = Py_NewRef(kill_marker);
    }
    if (mine == 0)
        take_displaced(me, &own, &own_obj);
    KILL_UNLOCK();
    Py_XDECREF(tid);
    if (mine <= 0) {
        PyErr_Clear();
        if (mine < 0)
            return 0;
        /* Not a thread being stopped: its own trace function (or none) goes back, and gets this event. */
        int rc = 0;
        if (restore_own(own, Py_XNewRef(own_obj)) == 0 && own != NULL)
            rc = own(own_obj, frame, what, arg);
        Py_XDECREF(own_obj);
        return rc;
    }
    if (what != PyTrace_CALL && what != PyTrace_LINE) {
        Py_DECREF(exc);
        Py_DECREF(marker);
        return 0;
    }
    PyObject *builtins = PyFrame_GetBuiltins(frame);
    int script = builtins && PyDict_Check(builtins) && PyDict_GetItemWithError(builtins, marker) != NULL;
    Py_XDECREF(builtins);
    Py_DECREF(marker);
    if (!script) {
        Py_DECREF(exc);
        PyErr_Clear();
        return 0;
    }
    PyErr_SetString(exc, "the call ran past its deadline and was stopped");
    Py_DECREF(exc);
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

/* The trace functions kill_trace displaced (a debugger's, coverage's: one per thread), each put back
 * by its own thread, since CPython sets another thread's trace function only for all threads at once:
 * the stopped thread when its guarded call returns, any other at its next trace event (kill_trace
 * then hands that event on). Guarded by kill_lock. */
typedef struct {
    unsigned long tid;
    Py_tracefunc func;
    PyObject *obj;
} displaced_t;
static displaced_t *displaced = NULL;
static Py_ssize_t n_displaced = 0, cap_displaced = 0;

/* Remember t's trace function before kill_trace replaces it (kill_lock held). -1 without memory. */
static int
displace(PyThreadState *t)
{
    if (t->c_tracefunc == kill_trace)
        return 0; /* still displaced from an earlier stop: that entry holds the one to put back */
    for (Py_ssize_t i = 0; i < n_displaced; i++)
        if (displaced[i].tid == t->thread_id) {
            displaced[i] = displaced[--n_displaced]; /* stale: its thread restored and moved on */
            break;
        }
    if (t->c_tracefunc == NULL)
        return 0;
    if (n_displaced == cap_displaced) {
        Py_ssize_t cap = cap_displaced ? 2 * cap_displaced : 8;
        displaced_t *grown = PyMem_RawRealloc(displaced, (size_t)cap * sizeof(displaced_t));
        if (grown == NULL)
            return -1;
        displaced = grown;
        cap_displaced = cap;
    }
    displaced[n_displaced++] = (displaced_t){t->thread_id, t->c_tracefunc, Py_XNewRef(t->c_traceobj)};
    return 0;
}

/* Take this thread's displaced trace function out of the table (kill_lock held); 0 if it had none. */
static int
take_displaced(unsigned long tid, Py_tracefunc *func, PyObject **obj)
{
    for (Py_ssize_t i = 0; i < n_displaced; i++)
        if (displaced[i].tid == tid) {
            *func = displaced[i].func;
            *obj = displaced[i].obj; /* the reference moves to the caller */
            displaced[i] = displaced[--n_displaced];
            return 1;
        }
    return 0;
}

/* Put this thread's own trace function back (or none) in place of kill_trace. */
static int
restore_own(Py_tracefunc func, PyObject *obj)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyEval_SetTrace(func, obj);
    int rc = PyErr_Occurred() ? -1 : 0;
    if (rc < 0)
        PyErr_WriteUnraisable(NULL);
    PyErr_Restore(type, value, tb);
    Py_XDECREF(obj); /* PyEval_SetTrace took its own reference */
    return rc;
}

static PyObject *
kill_start(PyObject *self, PyObject *args)
{
    unsigned long tid;
    PyObject *exc, *marker;
    if (!PyArg_ParseTuple(args, "kOU", &tid, &exc, &marker))
        return NULL;
    PyObject *key = PyLong_FromUnsignedLong(tid);
    if (key == NULL)
        return NULL;
    PyObject *old_exc = NULL, *old_marker = NULL, *fresh = kill_tids ? NULL : PySet_New(NULL);
    KILL_LOCK();
    if (kill_tids == NULL)
        kill_tids = Py_XNewRef(fresh);
    int rc = kill_tids == NULL ? -1 : 0;
#if PY_VERSION_HEX >= 0x030D0000
    PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
    for (; rc == 0 && t != NULL; t = PyThreadState_Next(t))
        rc = displace(t);
#else
    PyThreadState *t = find_thread(tid);
    if (rc == 0 && t != NULL)
        rc = displace(t);
#endif
    if (rc == 0) {
        old_exc = kill_exc;
        old_marker = kill_marker;
        kill_exc = Py_NewRef(exc);
        kill_marker = Py_NewRef(marker);
        rc = PySet_Add(kill_tids, key);
    }
#if PY_VERSION_HEX >= 0x030D0000
    if (rc == 0)
        PyEval_SetTraceAllThreads(kill_trace, NULL);
#endif
    KILL_UNLOCK();
    Py_DECREF(key);
    Py_XDECREF(fresh);
    Py_XDECREF(old_exc); /* outside the lock: a decref may run arbitrary code */
    Py_XDECREF(old_marker);
    if (rc < 0)
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
#if PY_VERSION_HEX < 0x030D0000
    if (t == NULL)
        Py_RETURN_FALSE;
    if (_PyEval_SetTrace(t, kill_trace, NULL) < 0)
        return NULL;
#endif
    Py_RETURN_TRUE;
}

/* Called by run_guarded on its own thread once the call is over: its own trace function goes back. */
static void
kill_stop_current(void)
{
    KILL_LOCK();
    int none = kill_tids == NULL || PySet_GET_SIZE(kill_tids) == 0;
    KILL_UNLOCK();
    if (none)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    unsigned long me = PyThread_get_thread_ident();
    PyObject *key = PyLong_FromUnsignedLong(me);
    Py_tracefunc func = NULL;
    PyObject *obj = NULL;
    KILL_LOCK();
    int stopped = key != NULL && PySet_Discard(kill_tids, key) == 1;
    if (stopped)
        take_displaced(me, &func, &obj);
    KILL_UNLOCK();
    Py_XDECREF(key);
    PyErr_Clear();
    if (stopped)
        restore_own(func, obj);
    PyErr_Restore(type, value, tb);
}

/* A timeout the watchdog raised just as the call returned is still pending in tstate->async_exc.
 * Overwriting it with PyThreadState_SetAsyncExc(tid, NULL) is not enough: CPython 3.11 and 3.12 then
 * signal the interpreter-wide "async exception pending" request (even for NULL) and clear that request
 * only when some thread delivers a non-NULL one, so it stays set for good: every eval-breaker check
 * takes the slow path (Python calls ran ~1.15x slower on 3.11, ~1.5x on 3.12) and, under a profile or
 * trace function, 3.11 re-checks the same RESUME forever (100% CPU). (3.13 keeps the request per
 * thread and drops it on the next check.) So the eval loop itself delivers it, which also withdraws
 * the request: drain_code is a one-instruction code object whose RESUME checks the eval breaker, and
 * exactly that exception is swallowed. Tracing and profiling are paused meanwhile: a profile function
 * called as the frame unwinds would be the Python code the timeout lands in (and CPython drops a
 * profiler that raises). Anything else the eval loop had pending and runs first (on the main thread,
 * a signal handler's exception) becomes the call's outcome, as it would have at the runtime's next
 * bytecode. */
static PyObject *drain_code = NULL;
static PyObject *drain_globals = NULL;

static int
drain_init(void)
{
    if (drain_code != NULL)
        return 0;
    PyObject *builtins = PyImport_ImportModule("builtins");
    PyObject *globals = builtins ? PyDict_New() : NULL;
    PyObject *code = NULL;
    if (globals != NULL && PyDict_SetItemString(globals, "__builtins__", builtins) == 0)
        code = Py_CompileString("None", "<edgevm: late timeout dropped>", Py_eval_input);
    Py_XDECREF(builtins);
    if (code == NULL) {
        Py_XDECREF(globals);
        return -1;
    }
    if (drain_code != NULL) { /* another thread got here first while compiling (GC may switch) */
        Py_DECREF(code);
        Py_DECREF(globals);
        return 0;
    }
    drain_code = code;
    drain_globals = globals;
    return 0;
}

static PyObject *
drop_late_timeout(PyObject *res)
{
    PyThreadState *tstate = PyThreadState_Get();
    if (tstate->async_exc == NULL)
        return res;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb); /* the call's own exception, if it raised */
    PyObject *ran;
    PyThreadState_EnterTracing(tstate);
    do {
        PyObject *pending = Py_NewRef(tstate->async_exc);
        ran = PyEval_EvalCode(drain_code, drain_globals, drain_globals);
        if (ran == NULL) {
            PyObject *t, *v, *b;
            PyErr_Fetch(&t, &v, &b);
            if (t == pending) {
                Py_XDECREF(t);
                Py_XDECREF(v);
                Py_XDECREF(b);
            }
            else {
                Py_CLEAR(res);
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                type = t;
                value = v;
                tb = b;
            }
        }
        Py_XDECREF(ran);
        Py_DECREF(pending);
    } while (ran == NULL && tstate->async_exc != NULL);
    PyThreadState_LeaveTracing(tstate);
    PyErr_Restore(type, value, tb);
    return res;
}

static PyObject *
run_guarded(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    char *flag;
    if (nargs < 4) {
        PyErr_SetString(PyExc_TypeError, "run_guarded(flag, deadline, exc, fn, *args)");
        return NULL;
    }
    if (get_flag(args[0], &flag) < 0 || drain_init() < 0)
        return NULL;
    double deadline = PyFloat_AsDouble(args[1]);
    if (deadline == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *exc = args[2], *fn = args[3];
    Py_INCREF(args[0]);
    Py_INCREF(exc);
    double outer_deadline = guard_call_deadline;
    int outer_late = guard_late_refused;
    guard_call_deadline = deadline > 0 ? deadline : 1e-9;
    guard_late_refused = 0;
    LOCK(handoff_lock);
    flag[0] = FLAG_RUNNING;
    UNLOCK(handoff_lock);
    PyObject *res = PyObject_Vectorcall(fn, args + 4, (size_t)(nargs - 4), NULL);
    LOCK(handoff_lock);
    flag[0] = FLAG_DONE;
    UNLOCK(handoff_lock);
    guard_call_deadline = outer_deadline;
    if (res == NULL && guard_late_refused) {
        PyErr_Clear();
        PyErr_SetString(exc, "the call ran past its deadline and was stopped (memory refused after it)");
    }
    guard_late_refused = outer_late;
    Py_DECREF(exc);
    kill_stop_current();
    res = drop_late_timeout(res);
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
    LOCK(handoff_lock);
    int n = flag[0] == FLAG_RUNNING ? PyThreadState_SetAsyncExc(tid, exc) : 0;
    UNLOCK(handoff_lock);
    return PyBool_FromLong(n == 1);
}

PyMethodDef guard_deadline_methods[] = {
    {"run_guarded", (PyCFunction)(void (*)(void))run_guarded, METH_FASTCALL,
     "run_guarded(flag, deadline, exc, fn, *args): call fn(*args); asynchronous exceptions are only "
     "delivered inside, and large allocations past the deadline (time.monotonic()) fail as exc."},
    {"raise_unless_done", raise_unless_done, METH_VARARGS,
     "raise_unless_done(flag, thread_id, exc) -> bool: raise exc in the thread if its guarded call runs."},
    {"kill_start", kill_start, METH_VARARGS,
     "kill_start(thread_id, exc, marker_key): stop the script code running on that thread (see kill_trace)."},
    {NULL, NULL, 0, NULL},
};
