/* LD_PRELOAD shim for test_free_threading.py: counts the process's sched_yield() calls (free-threaded
   CPython's locks spin with them before they sleep) and still yields. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_long yields;

int sched_yield(void) {
    atomic_fetch_add(&yields, 1);
    return (int)syscall(SYS_sched_yield);
}

long edgevm_test_yields(void) { return atomic_load(&yields); }
