/*
 * The per-call memory budget of a script call, per thread:
 *
 *   memory_install()                    hook the raw allocator and the arena allocator (once)
 *   budget_begin(limit) / budget_end()  start / end this thread's budget for one call
 *   numpy_install()                     route this thread's numpy array data through the budget
 *
 * The same hooks refuse large allocations of a call past its deadline (guard_refuse_late, guard.h).
 */
#include "guard.h"
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL edgevm_guard_ARRAY_API
#include <numpy/arrayobject.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>

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
    if (guard_refuse_late(n) || !budget_admit(n))
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
    if (guard_refuse_late(nelem * elsize) || !budget_admit(nelem * elsize))
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
    if ((int64_t)n > old && (guard_refuse_late(n) || !budget_admit(n - (size_t)old)))
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
    if (budget.active && (guard_refuse_late(n) || !budget_admit(n)))
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
#ifdef Py_GIL_DISABLED
    /* Free-threaded CPython allocates objects and PyMem blocks from mimalloc's heaps, which neither
     * the raw hook nor the arena hook sees, and it exports no way to size a block when it is freed:
     * a budget here would not hold (a 400 MB allocation passed a 64 MB one), so it refuses. */
    PyErr_SetString(PyExc_RuntimeError, "the per-call memory budget cannot be enforced on free-threaded CPython "
                    "(its allocator bypasses the budget's hooks): use process isolation, where rlimits cap each "
                    "worker's memory");
    return NULL;
#endif
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

/* numpy array data (NEP 49 handler). numpy allocates array data with malloc, not through Python's
 * allocators, so the raw hook never sees `np.ones(10**10)`. Installed per thread (numpy keeps the
 * handler in a context variable) on the runtime's worker threads. Memory is always zeroed: a script
 * must never read what a freed buffer held before (another bundle's code, key material). */
static void *
np_malloc(void *ctx, size_t n)
{
    if (budget.active && (guard_refuse_late(n) || !budget_admit(n)))
        return NULL;
    void *p = calloc(1, n ? n : 1);
    if (p && budget.active)
        budget_add((int64_t)malloc_usable_size(p));
    return p;
}

static void *
np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    if (elsize && nelem > SIZE_MAX / elsize)
        return NULL;
    return np_malloc(ctx, nelem * elsize);
}

static void *
np_realloc(void *ctx, void *ptr, size_t n)
{
    int64_t old = ptr ? (int64_t)malloc_usable_size(ptr) : 0;
    if (budget.active && (int64_t)n > old && (guard_refuse_late(n) || !budget_admit(n - (size_t)old)))
        return NULL;
    void *p = realloc(ptr, n ? n : 1);
    if (p && budget.active)
        budget_add((int64_t)malloc_usable_size(p) - old);
    if (p && (int64_t)n > old)
        memset((char *)p + old, 0, n - (size_t)old);
    return p;
}

static void
np_free(void *ctx, void *ptr, size_t size)
{
    if (budget.active && ptr)
        budget_add(-(int64_t)malloc_usable_size(ptr));
    free(ptr);
}

static PyDataMem_Handler np_handler = {
    "edgevm_budget", 1, {NULL, np_malloc, np_calloc, np_realloc, np_free}};
static PyObject *np_capsule = NULL;

static PyObject *
numpy_install(PyObject *self, PyObject *noargs)
{
    if (np_capsule == NULL) {
        if (PyArray_ImportNumPyAPI() < 0)
            return NULL;
        np_capsule = PyCapsule_New(&np_handler, "mem_handler", NULL);
        if (np_capsule == NULL)
            return NULL;
    }
    PyObject *old = PyDataMem_SetHandler(np_capsule);
    if (old == NULL)
        return NULL;
    Py_DECREF(old);
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

PyMethodDef guard_budget_methods[] = {
    {"memory_install", memory_install, METH_NOARGS, "Install the allocator hooks (idempotent)."},
    {"budget_begin", budget_begin, METH_O, "Start a memory budget of N bytes for this thread."},
    {"budget_end", budget_end, METH_NOARGS, "End this thread's budget; return (peak_bytes, exceeded)."},
    {"numpy_install", numpy_install, METH_NOARGS, "Route this thread's numpy array data through the budget."},
    {NULL, NULL, 0, NULL},
};
