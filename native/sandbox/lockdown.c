/*
 * vm.isolation._lockdown: a worker process locks itself down, once and for good (issue 13).
 *
 *   apply(keep_fds, address_space=0, data=0, cpu_seconds=0, landlock=True, seccomp=True) -> dict
 *       In this order:
 *       1. close every fd not in keep_fds (close_range over the gaps; /proc/self/fd without it);
 *       2. empty the environment: os.environ, posix.environ and the C environ (clearenv);
 *       3. prctl(PR_SET_NO_NEW_PRIVS) (needed by 4 and 6 without CAP_SYS_ADMIN);
 *       4. Landlock, if `landlock` and the kernel has it: a ruleset that handles every filesystem
 *          right of the kernel's ABI with no rule (so every open, listing, creation, removal,
 *          rename, truncation, device ioctl is refused, EACCES), TCP bind/connect (ABI 4+) and the
 *          abstract-unix-socket and signal scopes (ABI 6+). It binds the calling thread and the
 *          threads it starts later, not threads that already exist (seccomp, below, binds all);
 *       5. rlimits: RLIMIT_CORE 0; RLIMIT_NOFILE max(keep_fds) + 1, so no fd numbered above the
 *          kept ones can appear (an fd sent over the channel with SCM_RIGHTS could only take a
 *          free number below; the filter refuses every syscall that makes an fd); RLIMIT_AS and
 *          RLIMIT_DATA to the absolute byte counts given (soft and hard; 0 = left as is);
 *          RLIMIT_CPU soft limit to cpu_seconds of process CPU time (0 = left as is; the hard limit
 *          stays, so set_cpu_limit can move it). RLIMIT_NPROC is left alone: it counts every
 *          process of the user, not this one's threads, and the filter already refuses fork;
 *       6. if `seccomp`: the allowlist of filter.c, on every thread (SECCOMP_FILTER_FLAG_TSYNC).
 *       Returns what was applied: {"kept_fds", "nofile", "address_space", "data", "cpu_seconds",
 *       "no_new_privs", "landlock" (the ABI version enforced, 0 = none), "seccomp" (the filter's
 *       length in instructions, 0 = none), "arch"}. Arguments are checked before anything changes
 *       (ValueError, TypeError); from then on it is irreversible: an error past that point (an
 *       OSError naming the step, or the Python error that stopped it) leaves the process partly
 *       locked down, and it must exit. A second call raises RuntimeError, even after a first
 *       call that failed part way.
 *       `seccomp=False` leaves the other layers on: for diagnosing the filter, and for testing
 *       Landlock on its own (under the filter no file syscall ever reaches Landlock).
 *   set_cpu_limit(soft_seconds)
 *       RLIMIT_CPU soft limit to soft_seconds of process CPU time (0 = up to the hard limit).
 *       Works after the lockdown: the filter lets prlimit64/setrlimit through for RLIMIT_CPU of
 *       this process only.
 *   landlock_abi() -> int
 *       The kernel's Landlock ABI version, 0 if it has none (or it is disabled).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "lockdown.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Landlock rights and scopes newer than some kernel headers (ABI 3, 4, 5 and 6). */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP (1ULL << 0)
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#endif
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_restrict_self 446
#endif

/* struct landlock_ruleset_attr as of ABI 6; the kernel takes a longer struct than it knows if
 * the fields it does not know are zero */
struct ruleset_attr {
    __u64 handled_access_fs;
    __u64 handled_access_net;
    __u64 scoped;
};

static int applied = 0;

static int
kernel_landlock_abi(void)
{
    long abi = syscall(__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : (int)abi;
}

/* Everything the kernel's ABI can deny, with no rule allowing any of it. Returns the ABI
 * enforced (0 = no Landlock here), or -1 with errno set. */
static int
restrict_with_landlock(void)
{
    int abi = kernel_landlock_abi();
    if (abi == 0)
        return 0;
    struct ruleset_attr attr = {0};
    attr.handled_access_fs = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
    if (abi >= 2)
        attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
    if (abi >= 3)
        attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
    if (abi >= 4)
        attr.handled_access_net = LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
    if (abi >= 5)
        attr.handled_access_fs |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
    if (abi >= 6)
        attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
    int fd = (int)syscall(__NR_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (fd < 0)
        return -1;
    int rc = (int)syscall(__NR_landlock_restrict_self, fd, 0);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc < 0 ? -1 : abi;
}

static int
is_kept(int fd, const int *keep, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (keep[i] == fd)
            return 1;
    return 0;
}

/* Close every fd not in keep (sorted, unique). */
static int
close_other_fds(const int *keep, Py_ssize_t n)
{
#ifdef __NR_close_range
    unsigned first = 0;
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        if ((unsigned)keep[i] > first)
            rc = (int)syscall(__NR_close_range, first, (unsigned)keep[i] - 1, 0);
        first = (unsigned)keep[i] + 1;
    }
    if (rc == 0)
        rc = (int)syscall(__NR_close_range, first, ~0U, 0);
    if (rc == 0)
        return 0;
    if (errno != ENOSYS)
        return -1;
#endif
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -1;
    int self = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
            continue;
        int fd = atoi(entry->d_name);
        if (fd != self && !is_kept(fd, keep, n))
            close(fd);
    }
    closedir(dir);
    return 0;
}

/* Clear the dict module.attr, or if that is not a dict, its attribute `inner` (a dict). */
static int
clear_mapping(const char *module, const char *attr, const char *inner)
{
    PyObject *mod = PyImport_ImportModule(module);
    PyObject *obj = mod ? PyObject_GetAttrString(mod, attr) : NULL;
    Py_XDECREF(mod);
    if (obj == NULL)
        return -1;
    PyObject *data = PyDict_Check(obj) || inner == NULL ? Py_NewRef(obj) : PyObject_GetAttrString(obj, inner);
    Py_DECREF(obj);
    if (data == NULL)
        return -1;
    if (!PyDict_Check(data)) {
        Py_DECREF(data);
        PyErr_Format(PyExc_TypeError, "%s.%s is not backed by a dict", module, attr);
        return -1;
    }
    PyDict_Clear(data);
    Py_DECREF(data);
    return 0;
}

/* os.environ (its dict, os._Environ._data, is os.environb's too), posix.environ, then the C
 * environment. Clearing the dicts directly rather than calling os.environ.clear(), which
 * unsetenv()s key by key, halves the cost of apply in a freshly forked worker; clearenv() then
 * empties the C side at once. */
static int
clear_environment(void)
{
    if (clear_mapping("os", "environ", "_data") < 0 || clear_mapping("posix", "environ", NULL) < 0)
        return -1;
    return clearenv();
}

static int
set_limit(int resource, rlim_t soft, rlim_t hard)
{
    struct rlimit lim = {soft, hard};
    return setrlimit(resource, &lim);
}

static int
int_compare(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* keep_fds as a sorted array without duplicates, each an open fd. */
static int *
parse_keep_fds(PyObject *obj, Py_ssize_t *count)
{
    PyObject *seq = PySequence_Fast(obj, "keep_fds must be a sequence of fds");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int *fds = PyMem_Malloc(sizeof(int) * (n ? n : 1));
    if (fds == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fd == -1 && PyErr_Occurred())
            goto fail;
        if (fd < 0 || fd > INT_MAX || fcntl((int)fd, F_GETFD) < 0) {
            PyErr_Format(PyExc_ValueError, "keep_fds: %ld is not an open fd", fd);
            goto fail;
        }
        fds[i] = (int)fd;
    }
    Py_DECREF(seq);
    qsort(fds, (size_t)n, sizeof(int), int_compare);
    Py_ssize_t unique = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (unique == 0 || fds[unique - 1] != fds[i])
            fds[unique++] = fds[i];
    *count = unique;
    return fds;
fail:
    Py_DECREF(seq);
    PyMem_Free(fds);
    return NULL;
}

/* A limit of `value` for `resource` (0 = leave it) must not exceed its hard limit. */
static int
check_limit(const char *name, int resource, long long value)
{
    struct rlimit cur;
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0", name);
        return -1;
    }
    if (getrlimit(resource, &cur) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (value > 0 && cur.rlim_max != RLIM_INFINITY && (rlim_t)value > cur.rlim_max) {
        PyErr_Format(PyExc_ValueError, "%s %lld is above the hard limit %llu", name, value,
                     (unsigned long long)cur.rlim_max);
        return -1;
    }
    return 0;
}

static PyObject *
fail_applied(const char *step)
{
    PyErr_Format(PyExc_OSError, "lockdown: %s failed: %s (the process is partly locked down and must exit)",
                 step, strerror(errno));
    return NULL;
}

static PyObject *
lockdown_apply(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"keep_fds", "address_space", "data", "cpu_seconds", "landlock", "seccomp", NULL};
    PyObject *keep_obj;
    long long address_space = 0, data = 0, cpu_seconds = 0;
    int use_landlock = 1, use_seccomp = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|LLLpp:apply", kwlist, &keep_obj, &address_space, &data,
                                     &cpu_seconds, &use_landlock, &use_seccomp))
        return NULL;
    if (applied) {
        PyErr_SetString(PyExc_RuntimeError, "lockdown: already applied in this process");
        return NULL;
    }
    if (check_limit("address_space", RLIMIT_AS, address_space) < 0 ||
        check_limit("data", RLIMIT_DATA, data) < 0 || check_limit("cpu_seconds", RLIMIT_CPU, cpu_seconds) < 0)
        return NULL;
    Py_ssize_t nkeep;
    int *keep = parse_keep_fds(keep_obj, &nkeep);
    if (keep == NULL)
        return NULL;
    PyObject *kept = PyTuple_New(nkeep);
    for (Py_ssize_t i = 0; kept && i < nkeep; i++)
        PyTuple_SET_ITEM(kept, i, PyLong_FromLong(keep[i]));
    int nofile = nkeep ? keep[nkeep - 1] + 1 : 0;
    struct sock_filter insns[LOCKDOWN_MAX_INSNS];
    int ninsns = lockdown_build_filter(insns, getpid());
    if (kept == NULL || PyErr_Occurred() || ninsns < 0) {
        if (ninsns < 0)
            PyErr_SetString(PyExc_SystemError, "lockdown: the filter is longer than LOCKDOWN_MAX_INSNS");
        PyMem_Free(keep);
        Py_XDECREF(kept);
        return NULL;
    }

    if (__atomic_exchange_n(&applied, 1, __ATOMIC_SEQ_CST)) { /* another thread got here first (no GIL) */
        PyMem_Free(keep);
        Py_DECREF(kept);
        PyErr_SetString(PyExc_RuntimeError, "lockdown: already applied in this process");
        return NULL;
    }
    /* from here on nothing can be undone */
    int rc = close_other_fds(keep, nkeep);
    PyMem_Free(keep);
    if (rc < 0) {
        Py_DECREF(kept);
        return fail_applied("closing fds");
    }
    if (clear_environment() < 0) {
        Py_DECREF(kept);
        return PyErr_Occurred() ? NULL : fail_applied("clearenv");
    }
    const char *step = NULL;
    int landlock_abi = 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        step = "PR_SET_NO_NEW_PRIVS";
    else if (use_landlock && (landlock_abi = restrict_with_landlock()) < 0)
        step = "Landlock";
    else if (set_limit(RLIMIT_CORE, 0, 0) < 0)
        step = "RLIMIT_CORE";
    else if (set_limit(RLIMIT_NOFILE, (rlim_t)nofile, (rlim_t)nofile) < 0)
        step = "RLIMIT_NOFILE";
    else if (address_space && set_limit(RLIMIT_AS, (rlim_t)address_space, (rlim_t)address_space) < 0)
        step = "RLIMIT_AS";
    else if (data && set_limit(RLIMIT_DATA, (rlim_t)data, (rlim_t)data) < 0)
        step = "RLIMIT_DATA";
    else if (cpu_seconds) {
        struct rlimit cpu;
        if (getrlimit(RLIMIT_CPU, &cpu) < 0 || set_limit(RLIMIT_CPU, (rlim_t)cpu_seconds, cpu.rlim_max) < 0)
            step = "RLIMIT_CPU";
    }
    if (step == NULL && use_seccomp) {
        struct sock_fprog prog = {(unsigned short)ninsns, insns};
        long synced = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
        if (synced != 0) {
            if (synced > 0) /* the id of a thread that could not take the filter */
                errno = ESRCH;
            step = "installing the seccomp filter";
        }
    }
    if (step != NULL) {
        Py_DECREF(kept);
        return fail_applied(step);
    }
    return Py_BuildValue("{sNsisLsLsLsOsisiss}", "kept_fds", kept, "nofile", nofile, "address_space",
                         address_space, "data", data, "cpu_seconds", cpu_seconds, "no_new_privs", Py_True,
                         "landlock", landlock_abi, "seccomp", use_seccomp ? ninsns : 0, "arch",
                         lockdown_arch_name);
}

static PyObject *
lockdown_set_cpu_limit(PyObject *self, PyObject *arg)
{
    long long seconds = PyLong_AsLongLong(arg);
    struct rlimit cpu;
    if (seconds == -1 && PyErr_Occurred())
        return NULL;
    if (seconds < 0) {
        PyErr_SetString(PyExc_ValueError, "soft_seconds must be >= 0");
        return NULL;
    }
    if (getrlimit(RLIMIT_CPU, &cpu) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    rlim_t soft = seconds == 0 ? cpu.rlim_max : (rlim_t)seconds;
    if (cpu.rlim_max != RLIM_INFINITY && soft > cpu.rlim_max) {
        PyErr_Format(PyExc_ValueError, "soft_seconds %lld is above the hard limit %llu", seconds,
                     (unsigned long long)cpu.rlim_max);
        return NULL;
    }
    if (set_limit(RLIMIT_CPU, soft, cpu.rlim_max) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *
lockdown_landlock_abi(PyObject *self, PyObject *noargs)
{
    return PyLong_FromLong(kernel_landlock_abi());
}

/* die_with_parent(): SIGKILL this process when its parent exits (PR_SET_PDEATHSIG). */
static PyObject *
lockdown_die_with_parent(PyObject *self, PyObject *noargs)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"die_with_parent", lockdown_die_with_parent, METH_NOARGS,
     "die_with_parent(): be killed (SIGKILL) when the parent process exits."},
    {"apply", (PyCFunction)(void (*)(void))lockdown_apply, METH_VARARGS | METH_KEYWORDS,
     "apply(keep_fds, address_space=0, data=0, cpu_seconds=0, landlock=True, seccomp=True) -> dict: "
     "lock this process down for good (see native/sandbox/lockdown.c)."},
    {"set_cpu_limit", lockdown_set_cpu_limit, METH_O,
     "set_cpu_limit(soft_seconds): RLIMIT_CPU soft limit, seconds of process CPU time (0 = the hard limit)."},
    {"landlock_abi", lockdown_landlock_abi, METH_NOARGS,
     "landlock_abi() -> int: the kernel's Landlock ABI version, 0 if none."},
    {NULL, NULL, 0, NULL},
};

/* No state but `applied`, taken atomically: safe without the GIL. */
static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "vm.isolation._lockdown", NULL, 0, methods, slots};

PyMODINIT_FUNC
PyInit__lockdown(void)
{
    return PyModuleDef_Init(&module);
}
