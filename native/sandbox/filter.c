/*
 * The worker's seccomp-BPF allowlist (see lockdown.c for where it is installed).
 *
 * Shape of the program:
 *   1. seccomp_data.arch is not this build's architecture -> SECCOMP_RET_KILL_PROCESS (a foreign
 *      syscall ABI has other numbers; on x86_64 the x32 ABI, numbers with __X32_SYSCALL_BIT, too);
 *   2. a binary search over the syscall numbers of the rules below (JGE at the inner nodes, a few
 *      JEQ at the leaves), so any syscall costs about 15 instructions, and installing the filter
 *      (the kernel emulates it once per syscall number to fill its action cache) stays cheap;
 *   3. the rules: most syscalls are allowed whatever their arguments, so the kernel's action cache
 *      (5.11+) answers them without running the filter at all; some are allowed for some
 *      arguments only; clone3 gets ENOSYS (glibc then falls back to clone, whose flags the filter
 *      can see);
 *   4. everything else -> SECCOMP_RET_ERRNO | EPERM: Python sees PermissionError, never a signal.
 *
 * The list was found by running the worker's workload (tests/isolation/lockdown_workload.py) under
 * strace after the lockdown point, then kept to what CPython, numpy/OpenBLAS, ONNX Runtime, cffi
 * and a socket channel need; every entry says why it is there. Syscall arguments are 64-bit; the filter
 * reads the low 32 bits where the kernel itself truncates the argument to an int (pids, flags,
 * commands, prot) and both halves for pointers.
 */
#define _GNU_SOURCE /* CLONE_THREAD, AT_EMPTY_PATH */
#include "lockdown.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the argument offsets below assume a little-endian machine"
#endif

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
const char lockdown_arch_name[] = "x86_64";
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
const char lockdown_arch_name[] = "aarch64";
#else
#error "vm.isolation._lockdown supports x86_64 and aarch64 Linux"
#endif

#define ALLOW SECCOMP_RET_ALLOW
#define DENY (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))

#define LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define LD_ARCH BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch))
#define LD_LO(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8 * (i))
#define LD_HI(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#define JEQ(k, t, f) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (k), (t), (f))
#define JGE(k, t, f) BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, (k), (t), (f))
#define JSET(k, t, f) BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (k), (t), (f))
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))

/* Allowed whatever their arguments. Each works only on what the process already has: its memory,
 * its threads, its existing fds (no syscall here creates an fd or names a path). */
static const int allowed[] = {
    /* the channel and stdio: reads and writes on kept fds */
    __NR_read, __NR_write, __NR_readv, __NR_writev,
    __NR_recvfrom,                  /* socket.recv / recv_into */
    __NR_recvmsg, __NR_sendmsg,     /* socket.recvmsg / sendmsg (an fd received lands below RLIMIT_NOFILE) */
    /* waiting on kept fds: socket timeouts, selectors on a selector made before the lockdown */
#ifdef __NR_poll
    __NR_poll,
#endif
#ifdef __NR_select
    __NR_select,
#endif
    __NR_ppoll, __NR_pselect6,
#ifdef __NR_epoll_wait
    __NR_epoll_wait,
#endif
    __NR_epoll_pwait, __NR_epoll_ctl,
#ifdef __NR_epoll_pwait2
    __NR_epoll_pwait2,
#endif
    __NR_close,
    __NR_fstat,                     /* os.fstat on a kept fd (glibc 2.33+ uses newfstatat, below) */
    __NR_lseek,                     /* io objects ask for their position */
    /* memory: CPython's and numpy's allocators, ORT's arenas, thread stacks */
    __NR_brk, __NR_munmap, __NR_mremap,
    __NR_madvise,                   /* glibc malloc trimming, numpy's MADV_HUGEPAGE on big arrays */
    __NR_mbind,                     /* OpenBLAS's buffers (memory policy of its own pages) */
    /* threads: locks, and what a thread does when it starts and exits */
    __NR_futex, __NR_set_robust_list, __NR_rseq, __NR_membarrier,
    __NR_sched_yield,               /* spinning thread pools (ORT, OpenBLAS) */
    __NR_sched_getaffinity,         /* os.cpu_count, thread pools sizing themselves */
    __NR_getcpu,                    /* sched_getcpu where the vDSO does not answer it */
    __NR_exit, __NR_exit_group,
    /* time: vDSO fallbacks, time.sleep, time.process_time, CPU clocks of the process */
    __NR_clock_gettime, __NR_clock_getres, __NR_clock_nanosleep, __NR_nanosleep, __NR_gettimeofday,
    __NR_getrusage,                 /* CPU used so far (resource.getrusage) */
    /* identity of the process itself */
    __NR_getpid, __NR_gettid,
    __NR_getppid,                   /* the worker notices that its supervisor died */
    /* signals: delivery and handlers inside the process */
    __NR_rt_sigaction, __NR_rt_sigprocmask, __NR_rt_sigreturn, __NR_sigaltstack, __NR_restart_syscall,
    __NR_getrandom,                 /* os.urandom, numpy's default_rng, hash seeds */
#ifdef __NR_getrlimit
    __NR_getrlimit,
#endif
};

struct prog {
    struct sock_filter *insn;
    int n;
};

static void
emit(struct prog *p, const struct sock_filter *f, int count)
{
    for (int i = 0; i < count; i++) {
        if (p->n < LOCKDOWN_MAX_INSNS)
            p->insn[p->n] = f[i];
        p->n++;
    }
}

/* A syscall and what happens to it: body is run when nr matches, and every path of it ends in a
 * RET. */
struct rule {
    int nr;
    const struct sock_filter *body;
    int len;
};

static int
rule_compare(const void *a, const void *b)
{
    int x = ((const struct rule *)a)->nr, y = ((const struct rule *)b)->nr;
    return (x > y) - (x < y);
}

enum { LEAF_RULES = 4 };

/* The search over rules[0..n) (sorted by nr), nr in the accumulator. Returns -1 if a jump would
 * not fit in the 8 bits BPF gives it. */
static int
emit_search(struct prog *p, const struct rule *rules, int n)
{
    if (n <= LEAF_RULES) {
        for (int i = 0; i < n; i++) {
            const struct sock_filter head = JEQ((unsigned)rules[i].nr, 0, (unsigned char)rules[i].len);
            emit(p, &head, 1);
            emit(p, rules[i].body, rules[i].len);
        }
        const struct sock_filter deny = RET(DENY);
        emit(p, &deny, 1);
        return 0;
    }
    int mid = n / 2, at = p->n;
    const struct sock_filter split = JGE((unsigned)rules[mid].nr, 0, 0); /* jt patched below */
    emit(p, &split, 1);
    if (emit_search(p, rules, mid) < 0)
        return -1;
    int skip = p->n - at - 1;
    if (skip > 255)
        return -1;
    if (at < LOCKDOWN_MAX_INSNS)
        p->insn[at].jt = (unsigned char)skip;
    return emit_search(p, rules + mid, n - mid);
}

/* body: allow */
#define ALLOWED RET(ALLOW)
/* body: allow when the low word of argument i equals v */
#define ARG_EQ(i, v) LD_LO(i), JEQ((v), 0, 1), RET(ALLOW), RET(DENY)
/* body: allow when the low word of argument i has any bit of mask set / has none of them */
#define ARG_ANY(i, mask) LD_LO(i), JSET((mask), 0, 1), RET(ALLOW), RET(DENY)
#define ARG_NONE(i, mask) LD_LO(i), JSET((mask), 1, 0), RET(ALLOW), RET(DENY)
/* body: allow when argument i (a pointer) is NULL */
#define ARG_NULL(i) LD_LO(i), JEQ(0, 0, 3), LD_HI(i), JEQ(0, 0, 1), RET(ALLOW), RET(DENY)
/* body: allow when the low word of argument i is one of a, b, c, d */
#define ARG_IN4(i, a, b, c, d)                                                                     \
    LD_LO(i), JEQ((a), 4, 0), JEQ((b), 3, 0), JEQ((c), 2, 0), JEQ((d), 1, 0), RET(DENY), RET(ALLOW)
/* body: allow when the low word of argument i is one of a, b, c */
#define ARG_IN3(i, a, b, c) LD_LO(i), JEQ((a), 3, 0), JEQ((b), 2, 0), JEQ((c), 1, 0), RET(DENY), RET(ALLOW)

#define N_ALLOWED ((int)(sizeof allowed / sizeof allowed[0]))
#define RULE(nr, ...) {(nr), (const struct sock_filter[]){__VA_ARGS__}, \
                       (int)(sizeof((const struct sock_filter[]){__VA_ARGS__}) / sizeof(struct sock_filter))}

int
lockdown_build_filter(struct sock_filter *out, pid_t self)
{
    static const struct sock_filter allow_body[] = {ALLOWED};
    const struct rule special[] = {
        /* threads yes, processes no: clone must carry CLONE_THREAD (fork, vfork, posix_spawn do not) */
        RULE(__NR_clone, ARG_ANY(0, CLONE_THREAD)),
        RULE(__NR_clone3, RET(SECCOMP_RET_ERRNO | ENOSYS)),
        /* signals to this process only (the watchdog, raise(), os.kill(os.getpid(), 0)); tkill
         * names a bare thread id, which could be another process's: refused like kill of others */
        RULE(__NR_kill, ARG_EQ(0, (unsigned)self)),
        RULE(__NR_tgkill, ARG_EQ(0, (unsigned)self)),
        /* rlimits: read any of our own; change only RLIMIT_CPU (set_cpu_limit after the lockdown).
         * prlimit64(pid, resource, new, old): pid 0, and resource RLIMIT_CPU or new == NULL */
        RULE(__NR_prlimit64, LD_LO(0), JEQ(0, 0, 7), LD_LO(1), JEQ(RLIMIT_CPU, 4, 0), LD_LO(2),
             JEQ(0, 0, 3), LD_HI(2), JEQ(0, 0, 1), RET(ALLOW), RET(DENY)),
#ifdef __NR_setrlimit
        RULE(__NR_setrlimit, ARG_EQ(0, RLIMIT_CPU)),
#endif
        /* no executable memory can be made after the lockdown (W^X for anything injected) */
        RULE(__NR_mmap, ARG_NONE(2, PROT_EXEC)),
        RULE(__NR_mprotect, ARG_NONE(2, PROT_EXEC)),
        /* fstat through newfstatat(fd, "", buf, AT_EMPTY_PATH); with a path (os.stat) it is
         * refused. The filter cannot read the path, so a raw call with AT_EMPTY_PATH and a
         * non-empty path still stats it (metadata only, never contents; Python never makes it). */
        RULE(__NR_newfstatat, ARG_ANY(3, AT_EMPTY_PATH)),
        /* fd flags only: no F_DUPFD (a new fd), no F_SETOWN/F_SETSIG (signals to another process) */
        RULE(__NR_fcntl, ARG_IN4(1, F_GETFD, F_SETFD, F_GETFL, F_SETFL)),
        /* socket.setblocking/settimeout (FIONBIO), os.set_inheritable (FIOCLEX/FIONCLEX) */
        RULE(__NR_ioctl, ARG_IN3(1, FIONBIO, FIOCLEX, FIONCLEX)),
        /* send on the connected channel (dest_addr NULL), never to an address */
        RULE(__NR_sendto, ARG_NULL(4)),
    };
    enum { N_SPECIAL = sizeof special / sizeof special[0] };
    struct rule rules[N_ALLOWED + N_SPECIAL];
    for (int i = 0; i < N_ALLOWED; i++)
        rules[i] = (struct rule){allowed[i], allow_body, 1};
    memcpy(rules + N_ALLOWED, special, sizeof special);
    qsort(rules, N_ALLOWED + N_SPECIAL, sizeof rules[0], rule_compare);
    for (int i = 1; i < N_ALLOWED + N_SPECIAL; i++)
        if (rules[i].nr == rules[i - 1].nr)
            return -1; /* one rule per syscall */

    struct prog p = {out, 0};
    const struct sock_filter head[] = {
        LD_ARCH,
        JEQ(ARCH, 1, 0),
        RET(SECCOMP_RET_KILL_PROCESS),
        LD_NR,
#ifdef __x86_64__
        JGE(__X32_SYSCALL_BIT, 0, 1),
        RET(SECCOMP_RET_KILL_PROCESS),
#endif
    };
    emit(&p, head, (int)(sizeof head / sizeof head[0]));
    if (emit_search(&p, rules, N_ALLOWED + N_SPECIAL) < 0)
        return -1;
    return p.n <= LOCKDOWN_MAX_INSNS ? p.n : -1;
}
