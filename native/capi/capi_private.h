/*
 * capi_private.h — what the C files of libedgevm share among themselves (never seen by cffi or Python;
 * capi_internal.h is the part the Python side shares). Every function here is hidden (INTERNAL).
 *
 *   errors.c       the thread-local message, fail(), the status protocol, edgevm_errmsg, edgevm_errcode_name
 *   buffers.c      buffers handed to the caller (edgevm__out_alloc, edgevm_free)
 *   handles.c      the handle table: ids, lookup, references
 *   jobs.c         jobs and the dispatch queue, the dispatcher's side (take/finish/post_event/counters)
 *   delivery.c     the per-handle delivery thread: async callbacks, listener calls, C-side timeouts
 *   interpreter.c  starting the embedded Python (PyConfig, search path, allocator)
 *   api.c          the public edgevm_* entry points
 *
 * Threading model
 *   - Inference never makes a host thread wait for the interpreter lock. edgevm_infer and
 *     edgevm_infer_async copy the request into a job and append it to a C queue (g_mu + the job
 *     condition variable). One Python dispatcher thread (vm/host/capi.py) blocks in edgevm__take_job()
 *     with the GIL released, hands each job to Runtime.infer_async(), and the runtime's completion
 *     callback calls edgevm__finish_job(), which stores the result and wakes the waiter. A sync
 *     caller waits on the job's condition variable until the deadline plus a margin, then answers
 *     EDGEVM_ETIMEOUT itself without touching Python (a script stuck in one long native call holds
 *     the GIL; nothing else could answer).
 *   - Jobs are reference counted under g_mu: one reference for the C owner (the waiting host thread,
 *     or the handle's pending list for async calls) and one for the Python side (from the queue until
 *     edgevm__finish_job). Whoever drops the last one frees the job, so an abandoned job is freed
 *     when the runtime finally answers, and a late answer never touches freed memory.
 *   - Each handle has a delivery thread (plain C): it calls the host's async callbacks and listener,
 *     one at a time, and answers async calls whose deadline (plus margin) passed with ETIMEOUT.
 *   - Handles are ids, encoded in the edgevm_t * value and looked up in the live table (never
 *     dereferenced); ids are never reused, so a closed handle is ECLOSED forever and a value that was
 *     never a handle is EINVAL.
 *   - Other calls (open, load, track, metrics, set_listener, close) run Python on the calling thread
 *     (cffi takes the GIL). No C lock is ever held while Python runs or a host callback runs.
 *   - edgevm_errmsg: a thread-local buffer, rewritten by each call of the thread.
 */
#ifndef EDGEVM_CAPI_PRIVATE_H
#define EDGEVM_CAPI_PRIVATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "edgevm.h"
#include "capi_internal.h"

#define INTERNAL __attribute__((visibility("hidden")))

/* ---- errors.c ---------------------------------------------------------------------------------- */

INTERNAL void msg_clear(void);
INTERNAL void msg_set_raw(const char *text, size_t len);
INTERNAL void msg_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set the calling thread's message and return code. */
INTERNAL int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Run a Python-side function's result through the status protocol. */
INTERNAL int py_result(int status, const char *fn);

/* ---- buffers.c --------------------------------------------------------------------------------- */

/* Free an edgevm__out_alloc buffer that never reached the caller. */
INTERNAL void out_discard(void *p);

/* ---- time -------------------------------------------------------------------------------------- */

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline struct timespec ns_to_ts(uint64_t ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    return ts;
}

/* ---- handles and jobs -------------------------------------------------------------------------- */

/* Job states. Written under g_mu (atomically, because waiters may peek at them without the lock
 * while polling, as the dispatcher peeks at the queue head). */
enum { J_QUEUED = 0, J_TAKEN = 1, J_DONE = 2, J_ABANDONED = 3 };

typedef struct handle handle_t;
typedef struct job job_t;

struct job {
    edgevm_job_t pub;          /* what the dispatcher reads; must stay first */
    job_t *qnext;              /* dispatch queue, or the handle's delivery queue */
    job_t *pprev, *pnext;      /* the handle's pending list (async jobs not yet done) */
    handle_t *h;               /* holds a handle reference */
    int state;
    int refs;
    int in_dispatch;
    int in_pending;
    int deadline_ms;
    uint64_t expire_ns;        /* deadline + margin: when the C side answers ETIMEOUT */
    int status;
    uint8_t *out;              /* result, or NUL-terminated message when status != 0 */
    size_t out_len;
    int out_registered;        /* out is an edgevm__out_alloc buffer (sync success) */
    const char *cmsg;          /* a C-side message (static) when out is NULL */
    pthread_cond_t cv;         /* sync waiters */
    edgevm_callback cb;
    void *ud;
};

typedef struct event {
    struct event *next;
    int update;                /* for the update listener, else for the task listener */
    size_t len;
    uint8_t data[];
} event_t;

struct handle {
    uint64_t id;
    handle_t *next;            /* the live table */
    int refs;                  /* live table + calls in progress + delivery thread + jobs */
    int closing;
    int stop;
    int thread_started;
    pthread_t thread;
    pthread_cond_t cv;         /* wakes the delivery thread */
    int waiting;
    uint64_t wait_until;       /* 0: waiting without timeout */
    uint64_t next_expire;      /* lower bound of the pending jobs' expire_ns (0: none) */
    int deadline_ms;
    int margin_ms;
    uint64_t spin_ns;          /* how long a sync caller polls for its answer before sleeping */
    uint64_t max_input;
    uint64_t max_bundle;
    job_t *pend_head;
    job_t *dq_head, *dq_tail;
    event_t *eq_head, *eq_tail;
    edgevm_listener listener;
    void *listener_ud;
    edgevm_listener update_listener;
    void *update_listener_ud;
    edgevm_counters_t n;
};

/* The one lock of the C side: the handle table, the dispatch queue, every job and handle field. */
extern pthread_mutex_t g_mu INTERNAL;

/* handles.c */
INTERNAL edgevm_t *encode_handle(uint64_t id);
INTERNAL uint64_t new_handle_id(void);
INTERNAL handle_t *find_live_locked(uint64_t id);
INTERNAL void publish(handle_t *h);
/* Look a handle up and take a reference; on failure set the message and return the code. */
INTERNAL int acquire(edgevm_t *vm, const char *fn, handle_t **out);
INTERNAL void release(handle_t *h);
INTERNAL void handle_release_locked(handle_t *h);
/* Mark a live handle closing and take it out of the table: its table reference becomes the caller's. */
INTERNAL int retire(edgevm_t *vm, const char *fn, handle_t **out);

/* jobs.c */
/* pthread_cond_init with the monotonic clock (deadlines are CLOCK_MONOTONIC). */
INTERNAL void cond_init_mono(pthread_cond_t *cv);
/* Let the dispatcher poll for work at least this long before it sleeps. */
INTERNAL void dispatcher_spin_at_least(uint64_t ns);
INTERNAL int job_new(handle_t *h, int kind, const char *fn, const char *system, const char *business,
                     int priority, int deadline_ms, const uint8_t *in, size_t in_len, job_t **out);
INTERNAL void job_free_locked(job_t *j);
INTERNAL void job_release_locked(job_t *j);
INTERNAL void enqueue_locked(job_t *j);
INTERNAL void dequeue_locked(job_t *j);
INTERNAL void pending_add_locked(handle_t *h, job_t *j);
INTERNAL void pending_remove_locked(handle_t *h, job_t *j);
/* Answer every call of a closing handle that the runtime has not answered with `msg` (ECLOSED). */
INTERNAL void fail_calls_locked(handle_t *h, const char *msg);

/* delivery.c */
INTERNAL void *delivery_main(void *arg);
/* Hand a finished async job to the handle's delivery thread. */
INTERNAL void deliver_later_locked(handle_t *h, job_t *j);

/* ---- interpreter.c ----------------------------------------------------------------------------- */

/* Start the embedded interpreter once per process; EDGEVM_EINTERNAL (with the reason) if it failed. */
INTERNAL int ensure_python(const char *fn);

#endif
