/*
 * guard.h — what the files of vm.guard._guard share: each concern exports its table of methods, and
 * module.c (the module definition) adds them all. See each file for what its functions do.
 */
#ifndef EDGEVM_GUARD_H
#define EDGEVM_GUARD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyMethodDef guard_deadline_methods[]; /* deadline.c: guarded calls, asynchronous timeouts */
extern PyMethodDef guard_budget_methods[];   /* budget.c: per-call memory budget */
extern PyMethodDef guard_freeze_methods[];   /* freeze.c: immutable library classes */
extern PyMethodDef guard_shared_methods[];   /* shared.c: read-only shared library objects */

#endif
