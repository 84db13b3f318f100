/*
 * vm._guard — the interpreter-level guards the sandbox needs and Python cannot express:
 *
 *   run_guarded(flag, fn, *args)        call fn with asynchronous timeouts armed only inside it
 *   raise_unless_done(flag, tid, exc)   the watchdog's side: raise exc in thread tid if still inside
 *   memory_install()                    hook the raw allocator and the arena allocator
 *   budget_begin(limit) / budget_end()  per-thread memory budget for one script call
 *   freeze_type(cls)                    make a shared library class immutable (no monkeypatching)
 *   scan_code(...)                      the bytecode verifier's fast structural pass
 *
 * The GIL serialises run_guarded and raise_unless_done: both are C functions that run no Python
 * bytecode in between their checks and their effects, so an asynchronous exception can only be
 * delivered while the script itself runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>

/* ---------------------------------------------------------------- guarded calls */

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

/* ---------------------------------------------------------------- memory budget */

typedef struct {
    int active;
    int exceeded;
    int64_t limit;
    int64_t used;
    int64_t peak;
} budget_t;

static _Thread_local budget_t budget;
static PyMemAllocatorEx orig_raw;
static PyObjectArenaAllocator orig_arena;
static int installed = 0;

static inline int
budget_admit(size_t n)
{
    if (n > (size_t)INT64_MAX || (int64_t)n > budget.limit - budget.used) {
        budget.exceeded = 1;
        return 0;
    }
    return 1;
}

static inline void
budget_add(int64_t delta)
{
    budget.used += delta;
    if (budget.used > budget.peak)
        budget.peak = budget.used;
}

static void *
hook_malloc(void *ctx, size_t n)
{
    if (!budget.active)
        return orig_raw.malloc(orig_raw.ctx, n);
    if (!budget_admit(n))
        return NULL;
    void *p = orig_raw.malloc(orig_raw.ctx, n);
    if (p)
        budget_add((int64_t)malloc_usable_size(p));
    return p;
}

static void *
hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (!budget.active)
        return orig_raw.calloc(orig_raw.ctx, nelem, elsize);
    if (elsize && nelem > SIZE_MAX / elsize) {
        budget.exceeded = 1;
        return NULL;
    }
    if (!budget_admit(nelem * elsize))
        return NULL;
    void *p = orig_raw.calloc(orig_raw.ctx, nelem, elsize);
    if (p)
        budget_add((int64_t)malloc_usable_size(p));
    return p;
}

static void *
hook_realloc(void *ctx, void *ptr, size_t n)
{
    if (!budget.active)
        return orig_raw.realloc(orig_raw.ctx, ptr, n);
    int64_t old = ptr ? (int64_t)malloc_usable_size(ptr) : 0;
    if ((int64_t)n > old && !budget_admit(n - (size_t)old))
        return NULL;
    void *p = orig_raw.realloc(orig_raw.ctx, ptr, n);
    if (p)
        budget_add((int64_t)malloc_usable_size(p) - old);
    return p;
}

static void
hook_free(void *ctx, void *ptr)
{
    if (budget.active && ptr)
        budget_add(-(int64_t)malloc_usable_size(ptr));
    orig_raw.free(orig_raw.ctx, ptr);
}

static void *
hook_arena_alloc(void *ctx, size_t n)
{
    if (budget.active && !budget_admit(n))
        return NULL;
    void *p = orig_arena.alloc(orig_arena.ctx, n);
    if (p && budget.active)
        budget_add((int64_t)n);
    return p;
}

static void
hook_arena_free(void *ctx, void *ptr, size_t n)
{
    if (budget.active && ptr)
        budget_add(-(int64_t)n);
    orig_arena.free(orig_arena.ctx, ptr, n);
}

static PyObject *
memory_install(PyObject *self, PyObject *noargs)
{
    if (!installed) {
        PyMemAllocatorEx hook = {NULL, hook_malloc, hook_calloc, hook_realloc, hook_free};
        PyObjectArenaAllocator arena = {NULL, hook_arena_alloc, hook_arena_free};
        PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &orig_raw);
        PyObject_GetArenaAllocator(&orig_arena);
        PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &hook);
        PyObject_SetArenaAllocator(&arena);
        installed = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *
budget_begin(PyObject *self, PyObject *arg)
{
    long long limit = PyLong_AsLongLong(arg);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit <= 0) {
        PyErr_SetString(PyExc_ValueError, "memory budget must be positive");
        return NULL;
    }
    budget.limit = limit;
    budget.used = 0;
    budget.peak = 0;
    budget.exceeded = 0;
    budget.active = installed;
    Py_RETURN_NONE;
}

static PyObject *
budget_end(PyObject *self, PyObject *noargs)
{
    budget.active = 0;
    return Py_BuildValue("(LO)", (long long)budget.peak, budget.exceeded ? Py_True : Py_False);
}

/* ---------------------------------------------------------------- immutable library classes */

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

/* ---------------------------------------------------------------- bytecode structure */

/* One 8-byte row per opcode, built by vm/opcodes.py for the running interpreter. */
enum {
    ARG_NONE = 0,
    ARG_CONST = 1,      /* index into co_consts */
    ARG_NAME = 2,       /* (oparg >> shift) indexes co_names; reported to the caller */
    ARG_LOCAL = 3,      /* index into the fast locals (co_varnames + cells + free vars) */
    ARG_LOCAL_PAIR = 4, /* two 4-bit local indices */
    ARG_FREE_COUNT = 5, /* oparg <= number of free variables */
    ARG_JUMP_FWD = 6,   /* relative forward jump in code units, after the inline caches */
    ARG_JUMP_BWD = 7,   /* relative backward jump */
    ARG_ENUM = 8,       /* (oparg >> shift) <= max and not in deny_mask */
    ARG_REPORT = 9,     /* no operand check; reported to the caller with the previous instruction */
};

typedef struct {
    uint8_t allowed, caches, argkind, shift, name_class, deny_mask;
    uint16_t max;
} oprow_t;

static int
scan_fail(Py_ssize_t unit, const char *msg, int op)
{
    PyErr_Format(PyExc_ValueError, "offset %zd: %s (opcode %d)", unit * 2, msg, op);
    return -1;
}

/* Parse the varint format of co_exceptiontable (CPython 3.11-3.13). */
static int
read_varint(const uint8_t *p, Py_ssize_t n, Py_ssize_t *pos, long *out)
{
    if (*pos >= n)
        return -1;
    uint8_t b = p[(*pos)++];
    long val = b & 63;
    while (b & 64) {
        if (*pos >= n || val > (1L << 24))
            return -1;
        b = p[(*pos)++];
        val = (val << 6) | (b & 63);
    }
    *out = val;
    return 0;
}

static PyObject *
scan_code(PyObject *self, PyObject *args)
{
    Py_buffer code, exc, table;
    Py_ssize_t nconsts, nnames, nlocals, nfree;
    int ext_arg_op, for_iter_op, end_for_op, pop_top_op, for_iter_skip;
    PyObject *result = NULL;
    uint8_t *is_start = NULL;

    if (!PyArg_ParseTuple(args, "y*y*y*nnnni(iiii)", &code, &exc, &table, &nconsts, &nnames, &nlocals, &nfree,
                          &ext_arg_op, &for_iter_op, &end_for_op, &pop_top_op, &for_iter_skip))
        return NULL;
    const uint8_t *co = code.buf;
    Py_ssize_t nunits = code.len / 2;
    const oprow_t *rows = table.buf;

    if (table.len != 256 * (Py_ssize_t)sizeof(oprow_t)) {
        PyErr_SetString(PyExc_ValueError, "bad opcode table");
        goto done;
    }
    if (code.len % 2 || nunits == 0) {
        PyErr_SetString(PyExc_ValueError, "co_code length is not a positive even number");
        goto done;
    }
    is_start = PyMem_Calloc((size_t)nunits + 1, 1);
    result = PyList_New(0);
    if (!is_start || !result) {
        PyErr_NoMemory();
        goto fail;
    }

    /* Pass 1: opcodes, extended args, inline caches and operand bounds. */
    Py_ssize_t i = 0;
    long ext = 0;
    int prev_op = -1, prev_arg = 0;
    Py_ssize_t njumps = 0;
    while (i < nunits) {
        int op = co[2 * i];
        long arg = co[2 * i + 1] | (ext << 8);
        const oprow_t *r = &rows[op];
        if (!r->allowed) {
            scan_fail(i, "opcode not allowed", op);
            goto fail;
        }
        if (op == ext_arg_op) {
            if (ext > 0xFFFFFF) {
                scan_fail(i, "too many EXTENDED_ARG prefixes", op);
                goto fail;
            }
            ext = arg;
            i += 1;
            if (i >= nunits) {
                scan_fail(i, "EXTENDED_ARG at end of code", op);
                goto fail;
            }
            continue;
        }
        ext = 0;
        is_start[i] = 1;
        Py_ssize_t next = i + 1 + r->caches;
        if (next > nunits) {
            scan_fail(i, "inline cache runs past the end of the code", op);
            goto fail;
        }
        for (Py_ssize_t c = i + 1; c < next; c++) {
            if (co[2 * c] != 0 || co[2 * c + 1] != 0) {
                scan_fail(c, "inline cache entry is not zero", op);
                goto fail;
            }
        }
        switch (r->argkind) {
        case ARG_CONST:
            if (arg >= nconsts) {
                scan_fail(i, "constant index out of range", op);
                goto fail;
            }
            break;
        case ARG_NAME:
        case ARG_REPORT: {
            long idx = arg >> r->shift;
            if (r->argkind == ARG_NAME && idx >= nnames) {
                scan_fail(i, "name index out of range", op);
                goto fail;
            }
            if (r->name_class) {
                PyObject *t = Py_BuildValue("(iliii)", r->name_class, idx, prev_op, prev_arg, (int)(i * 2));
                if (!t || PyList_Append(result, t) < 0) {
                    Py_XDECREF(t);
                    goto fail;
                }
                Py_DECREF(t);
            }
            break;
        }
        case ARG_LOCAL:
            if (arg >= nlocals) {
                scan_fail(i, "local variable index out of range", op);
                goto fail;
            }
            break;
        case ARG_LOCAL_PAIR:
            if ((arg >> 4) >= nlocals || (arg & 15) >= nlocals || arg > 255) {
                scan_fail(i, "local variable index out of range", op);
                goto fail;
            }
            break;
        case ARG_FREE_COUNT:
            if (arg > nfree) {
                scan_fail(i, "free variable count out of range", op);
                goto fail;
            }
            break;
        case ARG_JUMP_FWD:
            if (next + arg > nunits) {
                scan_fail(i, "jump target out of range", op);
                goto fail;
            }
            njumps++;
            break;
        case ARG_JUMP_BWD:
            if (next - arg < 0) {
                scan_fail(i, "jump target out of range", op);
                goto fail;
            }
            njumps++;
            break;
        case ARG_ENUM:
            if ((arg >> r->shift) > r->max || ((arg >> r->shift) < 8 && (r->deny_mask >> (arg >> r->shift)) & 1)) {
                scan_fail(i, "operand out of range", op);
                goto fail;
            }
            break;
        default:
            break;
        }
        prev_op = op;
        prev_arg = (int)arg;
        i = next;
    }

    /* Pass 2: every jump lands on the start of an instruction (not a cache, not mid-prefix). */
    if (njumps) {
        i = 0;
        ext = 0;
        while (i < nunits) {
            int op = co[2 * i];
            long arg = co[2 * i + 1] | (ext << 8);
            const oprow_t *r = &rows[op];
            if (op == ext_arg_op) {
                ext = arg;
                i++;
                continue;
            }
            ext = 0;
            Py_ssize_t next = i + 1 + r->caches;
            Py_ssize_t target = -1;
            if (r->argkind == ARG_JUMP_FWD)
                target = next + arg;
            else if (r->argkind == ARG_JUMP_BWD)
                target = next - arg;
            if (target >= 0 && (target >= nunits || !is_start[target])) {
                scan_fail(i, "jump into the middle of an instruction", op);
                goto fail;
            }
            /* 3.12+: an exhausted FOR_ITER skips the END_FOR (and in 3.13 the POP_TOP) it targets. */
            if (op == for_iter_op && for_iter_skip > 0 &&
                (target + for_iter_skip >= nunits || co[2 * target] != end_for_op ||
                 (for_iter_skip == 2 && co[2 * (target + 1)] != pop_top_op))) {
                scan_fail(i, "FOR_ITER does not target END_FOR", op);
                goto fail;
            }
            i = next;
        }
    }

    /* Exception table: every entry covers whole instructions and its handler is an instruction. */
    {
        const uint8_t *p = exc.buf;
        Py_ssize_t pos = 0;
        while (pos < exc.len) {
            long start, length, target, depth;
            if (read_varint(p, exc.len, &pos, &start) < 0 || read_varint(p, exc.len, &pos, &length) < 0 ||
                read_varint(p, exc.len, &pos, &target) < 0 || read_varint(p, exc.len, &pos, &depth) < 0) {
                PyErr_SetString(PyExc_ValueError, "malformed exception table");
                goto fail;
            }
            if (start >= nunits || length <= 0 || start + length > nunits || target >= nunits ||
                !is_start[start] || !is_start[target] || (start + length < nunits && !is_start[start + length])) {
                PyErr_SetString(PyExc_ValueError, "exception table entry out of range");
                goto fail;
            }
        }
    }
    goto done;

fail:
    Py_CLEAR(result);
done:
    PyMem_Free(is_start);
    PyBuffer_Release(&code);
    PyBuffer_Release(&exc);
    PyBuffer_Release(&table);
    return result;
}

static PyMethodDef methods[] = {
    {"run_guarded", (PyCFunction)(void (*)(void))run_guarded, METH_FASTCALL,
     "run_guarded(flag, fn, *args): call fn(*args); asynchronous exceptions are only delivered inside."},
    {"raise_unless_done", raise_unless_done, METH_VARARGS,
     "raise_unless_done(flag, thread_id, exc) -> bool: raise exc in the thread if its guarded call runs."},
    {"memory_install", memory_install, METH_NOARGS, "Install the allocator hooks (idempotent)."},
    {"budget_begin", budget_begin, METH_O, "Start a memory budget of N bytes for this thread."},
    {"budget_end", budget_end, METH_NOARGS, "End this thread's budget; return (peak_bytes, exceeded)."},
    {"freeze_type", freeze_type, METH_O, "Make a heap class immutable (attributes cannot be set)."},
    {"scan_code", scan_code, METH_VARARGS,
     "scan_code(code, exceptiontable, table, nconsts, nnames, nlocals, nfree, extended_arg_opcode,"
     " (for_iter, end_for, pop_top, for_iter_skip))"
     " -> [(name_class, name_index, prev_opcode, prev_arg, offset)]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vm._guard", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__guard(void)
{
    return PyModule_Create(&module);
}
