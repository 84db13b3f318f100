/* vm.isolation._lockdown: what filter.c (the seccomp-BPF allowlist) gives lockdown.c (the module). */
#ifndef EDGEVM_LOCKDOWN_H
#define EDGEVM_LOCKDOWN_H

#include <linux/filter.h>
#include <sys/types.h>

/* Longest program lockdown_build_filter writes (today's is about 200 instructions). */
#define LOCKDOWN_MAX_INSNS 256

/* The allowlist for a process whose pid is `self` (kill/tgkill are allowed on it only).
 * Writes the program to out (LOCKDOWN_MAX_INSNS entries); returns its length, or -1 if it would
 * not fit. */
int lockdown_build_filter(struct sock_filter *out, pid_t self);

/* The architecture the filter was built for ("x86_64", "aarch64"). */
extern const char lockdown_arch_name[];

#endif
