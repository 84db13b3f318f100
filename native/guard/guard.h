/*
 * guard.h — what the files of vm.guard._guard share: each concern exports its table of methods, and
 * module.c (the module definition) adds them all. See each file for what its functions do.
 */
#ifndef EDGEVM_GUARD_H
#define EDGEVM_GUARD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

extern PyMethodDef guard_deadline_methods[]; /* deadline.c: guarded calls, asynchronous timeouts */
extern PyMethodDef guard_budget_methods[];   /* budget.c: per-call memory budget */
extern PyMethodDef guard_freeze_methods[];   /* freeze.c: immutable library classes */
extern PyMethodDef guard_shared_methods[];   /* shared.c: read-only shared library objects */
extern PyMethodDef guard_intcap_methods[];   /* intcap.c: caps on superlinear integer operations */
extern PyMethodDef guard_exit_methods[];     /* exitwatch.c: the CLI's exit at deadline + grace */
extern PyMethodDef guard_finalize_methods[]; /* finalize.c: script generators finalized in their call */

/* deadline.c -> budget.c: the deadline (CLOCK_MONOTONIC seconds, time.monotonic()'s clock) of the
 * guarded call running on this thread (0 outside one), and whether an allocation was refused
 * because it had passed. */
extern _Thread_local double guard_call_deadline;
extern _Thread_local int guard_late_refused;

/* Allocations this big or bigger are refused once the call's deadline has passed (smaller ones are
 * the runtime's own bookkeeping as the call unwinds). */
#define GUARD_LATE_MIN_BYTES 4096

/* Called by the allocator hooks: refuse an allocation of n bytes because this thread's guarded call
 * is past its deadline? No other thread can stop a C call that holds the GIL, but one that keeps
 * allocating (big-integer arithmetic, growing containers, array temporaries) then fails with
 * MemoryError soon after the deadline, which run_guarded reports as the timeout. */
static inline int
guard_refuse_late(size_t n)
{
    if (n < GUARD_LATE_MIN_BYTES || guard_call_deadline == 0)
        return 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)now.tv_sec + (double)now.tv_nsec * 1e-9 < guard_call_deadline)
        return 0;
    guard_late_refused = 1;
    return 1;
}

#endif
