/*
 * capi_internal.h — what the C API (the C files of native/capi/) and vm/host/capi.py (its Python side) share.
 * Not part of the public API: nothing here is exported from libedgevm (see build.py's version script).
 * It is also what cffi sees: build.py (capi_cdefs) drops the preprocessor lines and comments and
 * hands what comes before the marker comment of the functions implemented in Python to ffi.cdef, the
 * rest to ffi.embedding_api. So: plain declarations only (no macros), the Python ones after the marker.
 */
#ifndef EDGEVM_CAPI_INTERNAL_H
#define EDGEVM_CAPI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

enum { EDGEVM__JOB_SYNC = 1, EDGEVM__JOB_ASYNC = 2 };

/* One inference request, as the Python dispatcher sees it (the head of capi_private.h's job_t). */
typedef struct edgevm_job {
    int kind;               /* EDGEVM__JOB_SYNC or EDGEVM__JOB_ASYNC */
    int priority;           /* EDGEVM_PRIORITY_* */
    uint64_t handle;        /* handle id */
    double remaining_ms;    /* time left before the call's deadline, set when the dispatcher takes it */
    const char *system;     /* NUL-terminated copies owned by the job */
    const char *business;
    const uint8_t *data;    /* msgpack input, owned by the job */
    size_t len;
} edgevm_job_t;

/* What edgevm__py_open reports back about a new runtime. */
typedef struct edgevm_open_info {
    int deadline_ms;
    int margin_ms;
    int spin_us;
    uint64_t max_input;
    uint64_t max_bundle;
} edgevm_open_info_t;

/* C-side counters of one handle (part of edgevm_metrics). */
typedef struct edgevm_counters {
    uint64_t sync_calls;
    uint64_t async_calls;
    uint64_t c_timeouts;       /* calls the C side answered with ETIMEOUT itself */
    uint64_t callbacks;        /* async callbacks delivered */
    uint64_t events;           /* listener events delivered */
    uint64_t events_dropped;   /* listener events with no listener registered */
    uint64_t pending_async;    /* async calls not yet delivered */
    uint64_t queued;           /* calls (all handles) waiting for the dispatcher */
} edgevm_counters_t;

/* Implemented in C (the C files of native/capi/), called from Python (vm/host/capi.py) through cffi with the GIL released. */
edgevm_job_t *edgevm__take_job(void);
void edgevm__finish_job(edgevm_job_t *job, int status, const char *data, size_t len);
void edgevm__set_error(const char *message);
void edgevm__post_event(uint64_t handle, const char *data, size_t len);
void edgevm__post_update_event(uint64_t handle, const char *data, size_t len);
uint8_t *edgevm__out_alloc(size_t len);
int edgevm__counters(uint64_t handle, edgevm_counters_t *out);
void edgevm__init_failed(const char *message);
const char *edgevm__library_path(void);

/* @embedding_api: implemented in Python (vm/host/capi.py, ffi.def_extern), called from C; each takes
 * the GIL. A status left at -1 means the Python side never ran (the embedded interpreter failed to start). */
void edgevm__py_init(int *status);
void edgevm__py_open(const char *config_json, uint64_t handle, edgevm_open_info_t *info, int *status);
void edgevm__py_load(uint64_t handle, const uint8_t *data, size_t len, const char *path, int *status);
void edgevm__py_track(uint64_t handle, const uint8_t *data, size_t len, int *status);
void edgevm__py_metrics(uint64_t handle, uint8_t **out, size_t *out_len, int *status);
void edgevm__py_listen(uint64_t handle, int on, int *status);
void edgevm__py_update_now(uint64_t handle, uint8_t **out, size_t *out_len, int *status);
void edgevm__py_update_listen(uint64_t handle, int on, int *status);
void edgevm__py_close(uint64_t handle, int *status);

#endif
