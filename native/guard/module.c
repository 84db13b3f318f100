/*
 * vm.guard._guard — the interpreter-level guards the sandbox needs and Python cannot express:
 * deadlines (deadline.c), the memory budget (budget.c), immutable library classes (freeze.c),
 * read-only shared library objects (shared.c), caps on superlinear integer operations (intcap.c),
 * the CLI's exit at deadline + grace (exitwatch.c) and script generators finalized only inside their
 * own call (finalize.c).
 */
#include "guard.h"

static int
guard_exec(PyObject *module)
{
    if (PyModule_AddFunctions(module, guard_deadline_methods) < 0 ||
        PyModule_AddFunctions(module, guard_budget_methods) < 0 ||
        PyModule_AddFunctions(module, guard_freeze_methods) < 0 ||
        PyModule_AddFunctions(module, guard_shared_methods) < 0 ||
        PyModule_AddFunctions(module, guard_intcap_methods) < 0 ||
        PyModule_AddFunctions(module, guard_exit_methods) < 0 ||
        PyModule_AddFunctions(module, guard_finalize_methods) < 0)
        return -1;
    return 0;
}

/* Every mechanism is thread-safe without the GIL (each file says how), except the memory budget,
 * which refuses to install on a free-threaded build (budget.c). */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, guard_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vm.guard._guard", NULL, 0, NULL, slots};

PyMODINIT_FUNC
PyInit__guard(void)
{
    return PyModuleDef_Init(&module);
}
