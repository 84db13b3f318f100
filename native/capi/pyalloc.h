/*
 * pyalloc.h — the allocator PYTHONMALLOC names, for the interpreters edgevm starts itself: the one
 * embedded in libedgevm (interpreter.c) and the worker zygote's (native/zygote/launcher.c). Their
 * configuration is isolated, so CPython does not read PYTHONMALLOC on its own; the memory guard
 * (native/guard/budget.c) needs to know which allocator runs.
 */
#ifndef EDGEVM_PYALLOC_H
#define EDGEVM_PYALLOC_H

#include <Python.h>
#include <stdlib.h>
#include <string.h>

/* 1 and *out set if PYTHONMALLOC names an allocator, else 0. */
static inline int allocator_from_env(int *out)
{
    const char *m = getenv("PYTHONMALLOC");
    if (m == NULL || *m == '\0')
        return 0;
    static const struct { const char *name; int value; } names[] = {
        {"default", PYMEM_ALLOCATOR_DEFAULT}, {"malloc", PYMEM_ALLOCATOR_MALLOC},
        {"pymalloc", PYMEM_ALLOCATOR_PYMALLOC}, {"debug", PYMEM_ALLOCATOR_DEBUG},
        {"malloc_debug", PYMEM_ALLOCATOR_MALLOC_DEBUG}, {"pymalloc_debug", PYMEM_ALLOCATOR_PYMALLOC_DEBUG},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(m, names[i].name) == 0) {
            *out = names[i].value;
            return 1;
        }
    }
    return 0;
}

#endif
