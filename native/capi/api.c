/*
 * api.c — the public entry points of the edgevm C API (edgevm.h); edgevm_errmsg and
 * edgevm_errcode_name are in errors.c, edgevm_free in buffers.c.
 *
 * libedgevm is a cffi embedding library (build.py: build_capi): the C files of native/capi/, plus the
 * cffi-generated glue for the functions implemented in Python (vm/host/capi.py), linked against
 * libpython. capi_private.h describes the threading model and what each file owns.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "capi_private.h"

#define MAX_CONFIG_LEN (1u << 20)
#define MAX_PATH_LEN 65536

static int g_spinners; /* sync callers polling for their answer right now (at most one polls) */

EDGEVM_API const char *edgevm_version(void) { return EDGEVM_VERSION; }

EDGEVM_API int edgevm_open(const char *config_json, edgevm_t **out)
{
    msg_clear();
    if (out == NULL)
        return fail(EDGEVM_EINVAL, "edgevm_open: out is NULL");
    *out = NULL;
    if (config_json == NULL)
        return fail(EDGEVM_EINVAL, "edgevm_open: config_json is NULL");
    if (strnlen(config_json, MAX_CONFIG_LEN + 1) > MAX_CONFIG_LEN)
        return fail(EDGEVM_EINVAL, "edgevm_open: config_json is longer than %u bytes", MAX_CONFIG_LEN);
    int rc = ensure_python("edgevm_open");
    if (rc != EDGEVM_OK)
        return rc;

    handle_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return fail(EDGEVM_EINTERNAL, "edgevm_open: out of memory");
    cond_init_mono(&h->cv);
    h->id = new_handle_id();
    h->refs = 1; /* g_live's */

    edgevm_open_info_t info = {0, 25, 0, 0, 0};
    int status = -1;
    edgevm__py_open(config_json, h->id, &info, &status);
    rc = py_result(status, "edgevm_open");
    if (rc != EDGEVM_OK) {
        pthread_cond_destroy(&h->cv);
        free(h);
        return rc;
    }
    h->deadline_ms = info.deadline_ms > 0 ? info.deadline_ms : 50;
    h->margin_ms = info.margin_ms >= 0 ? info.margin_ms : 25;
    h->spin_ns = info.spin_us > 0 ? (uint64_t)info.spin_us * 1000ull : 0;
    dispatcher_spin_at_least(h->spin_ns);
    h->max_input = info.max_input;
    h->max_bundle = info.max_bundle;

    h->refs++; /* the delivery thread's */
    if (pthread_create(&h->thread, NULL, delivery_main, h) != 0) {
        status = -1;
        edgevm__py_close(h->id, &status);
        pthread_cond_destroy(&h->cv);
        free(h);
        return fail(EDGEVM_EINTERNAL, "edgevm_open: cannot start the delivery thread");
    }
    h->thread_started = 1;
    publish(h);
    *out = encode_handle(h->id);
    msg_clear();
    return EDGEVM_OK;
}

EDGEVM_API int edgevm_load_bundle(edgevm_t *vm, const uint8_t *data, size_t len)
{
    msg_clear();
    handle_t *h;
    int rc = acquire(vm, "edgevm_load_bundle", &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (data == NULL)
        rc = fail(EDGEVM_EINVAL, "edgevm_load_bundle: data is NULL");
    else if (len == 0)
        rc = fail(EDGEVM_EINVAL, "edgevm_load_bundle: len is 0");
    else if ((uint64_t)len > h->max_bundle)
        rc = fail(EDGEVM_EINVAL, "edgevm_load_bundle: len %zu exceeds the limit of %llu bytes (max_bundle_bytes)",
                  len, (unsigned long long)h->max_bundle);
    else {
        int status = -1;
        edgevm__py_load(h->id, data, len, NULL, &status);
        rc = py_result(status, "edgevm_load_bundle");
    }
    release(h);
    return rc;
}

EDGEVM_API int edgevm_load_file(edgevm_t *vm, const char *path)
{
    msg_clear();
    handle_t *h;
    int rc = acquire(vm, "edgevm_load_file", &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (path == NULL)
        rc = fail(EDGEVM_EINVAL, "edgevm_load_file: path is NULL");
    else if (path[0] == '\0')
        rc = fail(EDGEVM_EINVAL, "edgevm_load_file: path is empty");
    else if (strnlen(path, MAX_PATH_LEN + 1) > MAX_PATH_LEN)
        rc = fail(EDGEVM_EINVAL, "edgevm_load_file: path is longer than %d bytes", MAX_PATH_LEN);
    else {
        int status = -1;
        edgevm__py_load(h->id, NULL, 0, path, &status);
        rc = py_result(status, "edgevm_load_file");
    }
    release(h);
    return rc;
}

EDGEVM_API int edgevm_infer_ex(edgevm_t *vm, const char *system_code, const char *business_code, int priority,
                               int deadline_ms, const uint8_t *in_msgpack, size_t in_len, uint8_t **out_msgpack,
                               size_t *out_len)
{
    static const char fn[] = "edgevm_infer";
    msg_clear();
    if (out_msgpack != NULL)
        *out_msgpack = NULL;
    if (out_len != NULL)
        *out_len = 0;
    handle_t *h;
    int rc = acquire(vm, fn, &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (out_msgpack == NULL || out_len == NULL) {
        release(h);
        return fail(EDGEVM_EINVAL, "%s: %s is NULL", fn, out_msgpack == NULL ? "out_msgpack" : "out_len");
    }
    job_t *j;
    rc = job_new(h, EDGEVM__JOB_SYNC, fn, system_code, business_code, priority, deadline_ms, in_msgpack, in_len, &j);
    if (rc != EDGEVM_OK) {
        release(h);
        return rc;
    }

    pthread_mutex_lock(&g_mu);
    if (h->closing) {
        j->refs = 0;
        job_free_locked(j); /* also drops the job's handle reference (ours) */
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_ECLOSED, "%s: the handle was closed", fn);
    }
    h->n.sync_calls++;
    enqueue_locked(j);
    if (h->spin_ns > 0 && __atomic_fetch_add(&g_spinners, 1, __ATOMIC_ACQ_REL) == 0) {
        /* Most calls take well under a millisecond: watch for the answer for a moment before
         * sleeping, which saves a wake-up on the way back (yielding, so the runtime's threads
         * keep the CPU whenever they need it). One caller at a time: with several waiting, the
         * CPU is better spent on the workers. */
        pthread_mutex_unlock(&g_mu);
        uint64_t until_ns = mono_ns() + h->spin_ns;
        while (__atomic_load_n(&j->state, __ATOMIC_ACQUIRE) != J_DONE && mono_ns() < until_ns)
            sched_yield();
        __atomic_fetch_sub(&g_spinners, 1, __ATOMIC_ACQ_REL);
        pthread_mutex_lock(&g_mu);
    }
    else if (h->spin_ns > 0) {
        __atomic_fetch_sub(&g_spinners, 1, __ATOMIC_ACQ_REL);
    }
    struct timespec until = ns_to_ts(j->expire_ns);
    while (j->state != J_DONE) {
        if (pthread_cond_timedwait(&j->cv, &g_mu, &until) == ETIMEDOUT && j->state != J_DONE)
            break;
    }
    if (j->state == J_DONE) {
        rc = j->status;
        if (rc == EDGEVM_OK) {
            *out_msgpack = j->out;
            *out_len = j->out_len;
            j->out = NULL; /* now the caller's */
        } else if (j->out != NULL) {
            msg_set_raw((const char *)j->out, j->out_len);
        } else {
            msg_set("%s(%s/%s): %s", fn, system_code, business_code, j->cmsg ? j->cmsg : "failed");
        }
    } else {
        if (j->in_dispatch)
            dequeue_locked(j);
        else
            __atomic_store_n(&j->state, J_ABANDONED, __ATOMIC_RELEASE);
        h->n.c_timeouts++;
        rc = fail(EDGEVM_ETIMEOUT, "%s(%.200s/%.200s): no result within the deadline of %d ms (+%d ms margin); "
                  "the call was abandoned", fn, system_code, business_code, j->deadline_ms, h->margin_ms);
    }
    job_release_locked(j); /* the job holds the handle reference we took in acquire() */
    pthread_mutex_unlock(&g_mu);
    return rc;
}

EDGEVM_API int edgevm_infer(edgevm_t *vm, const char *system_code, const char *business_code,
                            const uint8_t *in_msgpack, size_t in_len, uint8_t **out_msgpack, size_t *out_len)
{
    return edgevm_infer_ex(vm, system_code, business_code, EDGEVM_PRIORITY_CORE, 0, in_msgpack, in_len,
                           out_msgpack, out_len);
}

EDGEVM_API int edgevm_infer_async_ex(edgevm_t *vm, const char *system_code, const char *business_code,
                                     int priority, int deadline_ms, const uint8_t *in_msgpack, size_t in_len,
                                     edgevm_callback cb, void *user_data)
{
    static const char fn[] = "edgevm_infer_async";
    msg_clear();
    handle_t *h;
    int rc = acquire(vm, fn, &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (cb == NULL) {
        release(h);
        return fail(EDGEVM_EINVAL, "%s: cb is NULL", fn);
    }
    job_t *j;
    rc = job_new(h, EDGEVM__JOB_ASYNC, fn, system_code, business_code, priority, deadline_ms, in_msgpack, in_len,
                 &j);
    if (rc != EDGEVM_OK) {
        release(h);
        return rc;
    }
    j->cb = cb;
    j->ud = user_data;
    pthread_mutex_lock(&g_mu);
    if (h->closing) {
        j->refs = 0;
        job_free_locked(j);
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_ECLOSED, "%s: the handle was closed", fn);
    }
    h->n.async_calls++;
    pending_add_locked(h, j);
    enqueue_locked(j);
    if (h->waiting && (h->wait_until == 0 || j->expire_ns < h->wait_until))
        pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&g_mu);
    return EDGEVM_OK;
}

EDGEVM_API int edgevm_infer_async(edgevm_t *vm, const char *system_code, const char *business_code, int priority,
                                  const uint8_t *in_msgpack, size_t in_len, edgevm_callback cb, void *user_data)
{
    return edgevm_infer_async_ex(vm, system_code, business_code, priority, 0, in_msgpack, in_len, cb, user_data);
}

EDGEVM_API int edgevm_track(edgevm_t *vm, const uint8_t *event_msgpack, size_t len)
{
    msg_clear();
    handle_t *h;
    int rc = acquire(vm, "edgevm_track", &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (event_msgpack == NULL)
        rc = fail(EDGEVM_EINVAL, "edgevm_track: event_msgpack is NULL");
    else if (len == 0)
        rc = fail(EDGEVM_EINVAL, "edgevm_track: len is 0 (the event must be msgpack)");
    else if ((uint64_t)len > h->max_input)
        rc = fail(EDGEVM_EINVAL, "edgevm_track: len %zu exceeds the limit of %llu bytes (max_input_bytes)", len,
                  (unsigned long long)h->max_input);
    else {
        int status = -1;
        edgevm__py_track(h->id, event_msgpack, len, &status);
        rc = py_result(status, "edgevm_track");
    }
    release(h);
    return rc;
}

/* Set one of a handle's listeners (the task listener, or with `update` the update listener): the C
 * side first, so no event posted once Python forwards them is dropped; undone if Python refuses. */
static int set_listener(edgevm_t *vm, int update, edgevm_listener cb, void *user_data)
{
    const char *fn = update ? "edgevm_set_update_listener" : "edgevm_set_listener";
    msg_clear();
    handle_t *h;
    int rc = acquire(vm, fn, &h);
    if (rc != EDGEVM_OK)
        return rc;
    edgevm_listener *slot = update ? &h->update_listener : &h->listener;
    void **slot_ud = update ? &h->update_listener_ud : &h->listener_ud;
    pthread_mutex_lock(&g_mu);
    *slot = cb;
    *slot_ud = cb != NULL ? user_data : NULL;
    pthread_mutex_unlock(&g_mu);
    int status = -1;
    (update ? edgevm__py_update_listen : edgevm__py_listen)(h->id, cb != NULL, &status);
    rc = py_result(status, fn);
    if (rc != EDGEVM_OK) {
        pthread_mutex_lock(&g_mu);
        *slot = NULL;
        *slot_ud = NULL;
        pthread_mutex_unlock(&g_mu);
    }
    release(h);
    return rc;
}

EDGEVM_API int edgevm_set_listener(edgevm_t *vm, edgevm_listener cb, void *user_data)
{
    return set_listener(vm, 0, cb, user_data);
}

EDGEVM_API int edgevm_set_update_listener(edgevm_t *vm, edgevm_listener cb, void *user_data)
{
    return set_listener(vm, 1, cb, user_data);
}

/* A call whose answer is a msgpack buffer made by Python (edgevm_metrics, edgevm_update_now). */
static int msgpack_out(edgevm_t *vm, const char *fn, void (*py)(uint64_t, uint8_t **, size_t *, int *),
                       uint8_t **out_msgpack, size_t *out_len)
{
    msg_clear();
    if (out_msgpack != NULL)
        *out_msgpack = NULL;
    if (out_len != NULL)
        *out_len = 0;
    handle_t *h;
    int rc = acquire(vm, fn, &h);
    if (rc != EDGEVM_OK)
        return rc;
    if (out_msgpack == NULL || out_len == NULL) {
        rc = fail(EDGEVM_EINVAL, "%s: %s is NULL", fn, out_msgpack == NULL ? "out_msgpack" : "out_len");
    } else {
        int status = -1;
        uint8_t *buf = NULL;
        size_t n = 0;
        py(h->id, &buf, &n, &status);
        rc = py_result(status, fn);
        if (rc == EDGEVM_OK) {
            *out_msgpack = buf;
            *out_len = n;
        } else if (buf != NULL) {
            edgevm_free(buf);
        }
    }
    release(h);
    return rc;
}

EDGEVM_API int edgevm_metrics(edgevm_t *vm, uint8_t **out_msgpack, size_t *out_len)
{
    return msgpack_out(vm, "edgevm_metrics", edgevm__py_metrics, out_msgpack, out_len);
}

EDGEVM_API int edgevm_update_now(edgevm_t *vm, uint8_t **out_msgpack, size_t *out_len)
{
    return msgpack_out(vm, "edgevm_update_now", edgevm__py_update_now, out_msgpack, out_len);
}

EDGEVM_API int edgevm_close(edgevm_t *vm)
{
    static const char closed_msg[] = "edgevm: the handle was closed before the call finished";
    msg_clear();
    handle_t *h;
    int rc = retire(vm, "edgevm_close", &h); /* the table's reference is now this call's */
    if (rc != EDGEVM_OK)
        return rc;

    /* Python side: Runtime.close() fails what it still holds (callbacks with Closed). */
    int status = -1;
    edgevm__py_close(h->id, &status);
    rc = status == -1 ? fail(EDGEVM_EINTERNAL, "edgevm_close: the embedded runtime did not answer") : EDGEVM_OK;

    pthread_mutex_lock(&g_mu);
    fail_calls_locked(h, closed_msg);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    int self = h->thread_started && pthread_equal(pthread_self(), h->thread);
    pthread_mutex_unlock(&g_mu);

    if (h->thread_started) {
        if (self)
            pthread_detach(h->thread); /* we are inside one of its callbacks: it exits after we return */
        else
            pthread_join(h->thread, NULL);
    }
    release(h);
    if (rc == EDGEVM_OK)
        msg_clear();
    return rc;
}
