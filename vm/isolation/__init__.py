"""Process isolation: each bundle runs in a worker process forked from a pre-initialised zygote,
which loads its bundle, creates its model sessions, then locks itself down for good (seccomp-BPF
allowlist, Landlock, rlimits, no fds but its channel, an empty environment: ``vm.isolation.lockdown``)
and from then on only computes, answering request frames on one socket; the supervisor in the host
answers every call by its deadline, kills and respawns workers, and turns their crashes into typed
errors."""
