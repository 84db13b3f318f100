/*
 * jobs.c — inference jobs and the dispatch queue. The host side creates and enqueues jobs (api.c);
 * the Python dispatcher (vm/host/capi.py) takes them with edgevm__take_job() and answers them with
 * edgevm__finish_job(), both with the GIL released. Listener events enter here too
 * (edgevm__post_event), on their way to the handle's delivery thread.
 */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "capi_private.h"

#define MAX_CODE_LEN 1024

static pthread_cond_t g_job_cv = PTHREAD_COND_INITIALIZER;
static job_t *g_q_head, *g_q_tail;
static uint64_t g_q_len;
static uint64_t g_dspin_ns; /* how long the dispatcher polls for work before sleeping (max over handles) */

static pthread_once_t g_mono_once = PTHREAD_ONCE_INIT;
static pthread_condattr_t g_mono_attr;

static void init_mono_attr(void)
{
    pthread_condattr_init(&g_mono_attr);
    pthread_condattr_setclock(&g_mono_attr, CLOCK_MONOTONIC);
}

INTERNAL void cond_init_mono(pthread_cond_t *cv)
{
    pthread_once(&g_mono_once, init_mono_attr);
    pthread_cond_init(cv, &g_mono_attr);
}

INTERNAL void dispatcher_spin_at_least(uint64_t ns)
{
    if (ns > __atomic_load_n(&g_dspin_ns, __ATOMIC_RELAXED))
        __atomic_store_n(&g_dspin_ns, ns, __ATOMIC_RELAXED);
}

INTERNAL void job_free_locked(job_t *j)
{
    if (j->out != NULL) {
        if (j->out_registered)
            out_discard(j->out);
        else
            free(j->out);
    }
    if (j->pub.kind == EDGEVM__JOB_SYNC)
        pthread_cond_destroy(&j->cv);
    handle_t *h = j->h;
    free(j);
    handle_release_locked(h);
}

INTERNAL void job_release_locked(job_t *j)
{
    if (--j->refs == 0)
        job_free_locked(j);
}

INTERNAL void enqueue_locked(job_t *j)
{
    j->qnext = NULL;
    if (g_q_tail != NULL)
        g_q_tail->qnext = j;
    else
        __atomic_store_n(&g_q_head, j, __ATOMIC_RELEASE);
    g_q_tail = j;
    j->in_dispatch = 1;
    g_q_len++;
    pthread_cond_signal(&g_job_cv);
}

/* Remove a job still waiting for the dispatcher and drop the Python side's reference (not the last:
 * the caller holds the owner's). */
INTERNAL void dequeue_locked(job_t *j)
{
    job_t *prev = NULL;
    for (job_t *it = g_q_head; it != NULL; prev = it, it = it->qnext) {
        if (it == j) {
            if (prev != NULL)
                prev->qnext = j->qnext;
            else
                __atomic_store_n(&g_q_head, j->qnext, __ATOMIC_RELEASE);
            if (g_q_tail == j)
                g_q_tail = prev;
            break;
        }
    }
    j->qnext = NULL;
    j->in_dispatch = 0;
    g_q_len--;
    j->refs--;
}

INTERNAL void pending_add_locked(handle_t *h, job_t *j)
{
    j->pprev = NULL;
    j->pnext = h->pend_head;
    if (h->pend_head != NULL)
        h->pend_head->pprev = j;
    h->pend_head = j;
    j->in_pending = 1;
    h->n.pending_async++;
    if (h->next_expire == 0 || j->expire_ns < h->next_expire)
        h->next_expire = j->expire_ns;
}

INTERNAL void pending_remove_locked(handle_t *h, job_t *j)
{
    if (!j->in_pending)
        return;
    if (j->pprev != NULL)
        j->pprev->pnext = j->pnext;
    else
        h->pend_head = j->pnext;
    if (j->pnext != NULL)
        j->pnext->pprev = j->pprev;
    j->pprev = j->pnext = NULL;
    j->in_pending = 0;
    h->n.pending_async--;
}

static size_t bounded_strlen(const char *s, size_t cap) { return strnlen(s, cap); }

/* A job with copies of the codes and the input, in one allocation. refs: owner + Python side. */
INTERNAL int job_new(handle_t *h, int kind, const char *fn, const char *system, const char *business, int priority,
                     int deadline_ms, const uint8_t *in, size_t in_len, job_t **out)
{
    *out = NULL;
    if (system == NULL || business == NULL)
        return fail(EDGEVM_EINVAL, "%s: %s is NULL", fn, system == NULL ? "system_code" : "business_code");
    size_t slen = bounded_strlen(system, MAX_CODE_LEN + 1), blen = bounded_strlen(business, MAX_CODE_LEN + 1);
    if (slen > MAX_CODE_LEN || blen > MAX_CODE_LEN)
        return fail(EDGEVM_EINVAL, "%s: %s is longer than %d bytes", fn,
                    slen > MAX_CODE_LEN ? "system_code" : "business_code", MAX_CODE_LEN);
    if (slen == 0 || blen == 0)
        return fail(EDGEVM_EINVAL, "%s: %s is empty", fn, slen == 0 ? "system_code" : "business_code");
    if (in == NULL)
        return fail(EDGEVM_EINVAL, "%s: in_msgpack is NULL", fn);
    if (in_len == 0)
        return fail(EDGEVM_EINVAL, "%s: in_len is 0 (the input must be msgpack)", fn);
    if ((uint64_t)in_len > h->max_input)
        return fail(EDGEVM_EINVAL, "%s: in_len %zu exceeds the limit of %llu bytes (max_input_bytes)", fn, in_len,
                    (unsigned long long)h->max_input);
    if (priority < EDGEVM_PRIORITY_CORE || priority > EDGEVM_PRIORITY_LOW)
        return fail(EDGEVM_EINVAL, "%s: priority %d is not EDGEVM_PRIORITY_CORE, _NORMAL or _LOW", fn, priority);
    if (deadline_ms <= 0)
        deadline_ms = h->deadline_ms;
    size_t size = sizeof(job_t) + slen + 1 + blen + 1 + in_len;
    job_t *j = calloc(1, size);
    if (j == NULL)
        return fail(EDGEVM_EINTERNAL, "%s: out of memory (%zu bytes)", fn, size);
    char *p = (char *)(j + 1);
    memcpy(p, system, slen + 1);
    j->pub.system = p;
    p += slen + 1;
    memcpy(p, business, blen + 1);
    j->pub.business = p;
    p += blen + 1;
    memcpy(p, in, in_len);
    j->pub.data = (const uint8_t *)p;
    j->pub.len = in_len;
    j->pub.kind = kind;
    j->pub.priority = priority;
    j->pub.handle = h->id;
    j->deadline_ms = deadline_ms;
    j->expire_ns = mono_ns() + (uint64_t)deadline_ms * 1000000ull + (uint64_t)h->margin_ms * 1000000ull;
    j->pub.remaining_ms = deadline_ms;
    j->refs = 2;
    j->h = h;
    if (kind == EDGEVM__JOB_SYNC)
        cond_init_mono(&j->cv);
    *out = j;
    return EDGEVM_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* the dispatcher's side (called from vm/host/capi.py)                                              */

INTERNAL edgevm_job_t *edgevm__take_job(void)
{
    uint64_t spin = __atomic_load_n(&g_dspin_ns, __ATOMIC_RELAXED);
    if (spin > 0 && __atomic_load_n(&g_q_head, __ATOMIC_ACQUIRE) == NULL) {
        /* poll for a moment before sleeping: back-to-back calls then skip a wake-up (yielding, so
         * that the runtime's threads get the CPU whenever they need it) */
        uint64_t until_ns = mono_ns() + spin;
        while (__atomic_load_n(&g_q_head, __ATOMIC_ACQUIRE) == NULL && mono_ns() < until_ns)
            sched_yield();
    }
    pthread_mutex_lock(&g_mu);
    while (g_q_head == NULL)
        pthread_cond_wait(&g_job_cv, &g_mu);
    job_t *j = g_q_head;
    __atomic_store_n(&g_q_head, j->qnext, __ATOMIC_RELEASE);
    if (g_q_head == NULL)
        g_q_tail = NULL;
    g_q_len--;
    j->qnext = NULL;
    j->in_dispatch = 0;
    __atomic_store_n(&j->state, J_TAKEN, __ATOMIC_RELEASE);
    uint64_t now = mono_ns();
    uint64_t deadline = j->expire_ns - (uint64_t)j->h->margin_ms * 1000000ull;
    j->pub.remaining_ms = deadline > now ? (double)(deadline - now) / 1e6 : 0.0;
    pthread_mutex_unlock(&g_mu);
    return &j->pub;
}

INTERNAL void edgevm__finish_job(edgevm_job_t *pub, int status, const char *data, size_t len)
{
    job_t *j = (job_t *)pub;
    static const char no_data[] = "edgevm: the runtime returned no data";
    if (j == NULL)
        return;
    if (status < 0 || status > 255)
        status = EDGEVM_EINTERNAL;
    if (status == EDGEVM_OK && (data == NULL || len == 0)) {
        status = EDGEVM_EINTERNAL;
        data = no_data;
        len = sizeof no_data - 1;
    }
    if (data == NULL)
        len = 0;

    pthread_mutex_lock(&g_mu);
    if (j->state != J_TAKEN) { /* abandoned: the C side answered already */
        if (j->state == J_ABANDONED)
            job_release_locked(j);
        pthread_mutex_unlock(&g_mu);
        return;
    }
    int registered = j->pub.kind == EDGEVM__JOB_SYNC && status == EDGEVM_OK;
    pthread_mutex_unlock(&g_mu);

    uint8_t *out = NULL;
    if (registered) {
        out = edgevm__out_alloc(len);
        if (out != NULL)
            memcpy(out, data, len);
    } else if (len < SIZE_MAX) {
        out = malloc(len + 1);
        if (out != NULL) {
            if (len)
                memcpy(out, data, len);
            out[len] = 0;
        }
    }

    pthread_mutex_lock(&g_mu);
    if (j->state == J_ABANDONED) {
        if (out != NULL) {
            if (registered)
                out_discard(out);
            else
                free(out);
        }
        job_release_locked(j);
        pthread_mutex_unlock(&g_mu);
        return;
    }
    __atomic_store_n(&j->state, J_DONE, __ATOMIC_RELEASE);
    if (out == NULL) {
        j->status = status == EDGEVM_OK ? EDGEVM_EINTERNAL : status;
        j->cmsg = "edgevm: out of memory for the result";
    } else {
        j->status = status;
        j->out = out;
        j->out_len = len;
        j->out_registered = registered;
    }
    if (j->pub.kind == EDGEVM__JOB_SYNC) {
        pthread_cond_signal(&j->cv);
    } else {
        pending_remove_locked(j->h, j);
        deliver_later_locked(j->h, j);
    }
    job_release_locked(j); /* the Python side's reference; the owner still holds one */
    pthread_mutex_unlock(&g_mu);
}

static void post_event(uint64_t id, int update, const char *data, size_t len)
{
    if (data == NULL || len == 0 || len > SIZE_MAX - sizeof(event_t))
        return;
    event_t *ev = malloc(sizeof(event_t) + len);
    if (ev == NULL)
        return;
    ev->next = NULL;
    ev->update = update;
    ev->len = len;
    memcpy(ev->data, data, len);
    pthread_mutex_lock(&g_mu);
    handle_t *h = find_live_locked(id);
    if (h == NULL || h->closing || h->stop || (update ? h->update_listener : h->listener) == NULL) {
        if (h != NULL)
            h->n.events_dropped++;
        pthread_mutex_unlock(&g_mu);
        free(ev);
        return;
    }
    if (h->eq_tail != NULL)
        h->eq_tail->next = ev;
    else
        h->eq_head = ev;
    h->eq_tail = ev;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&g_mu);
}

INTERNAL void edgevm__post_event(uint64_t id, const char *data, size_t len)
{
    post_event(id, 0, data, len);
}

INTERNAL void edgevm__post_update_event(uint64_t id, const char *data, size_t len)
{
    post_event(id, 1, data, len);
}

INTERNAL int edgevm__counters(uint64_t id, edgevm_counters_t *out)
{
    pthread_mutex_lock(&g_mu);
    handle_t *h = find_live_locked(id);
    if (h == NULL) {
        pthread_mutex_unlock(&g_mu);
        return -1;
    }
    *out = h->n;
    out->queued = g_q_len;
    pthread_mutex_unlock(&g_mu);
    return 0;
}


INTERNAL void fail_calls_locked(handle_t *h, const char *msg)
{
    /* sync calls still waiting for the dispatcher: wake their waiters with ECLOSED */
    job_t *prev = NULL, *it = g_q_head;
    while (it != NULL) {
        job_t *nx = it->qnext;
        if (it->h == h && it->pub.kind == EDGEVM__JOB_SYNC) {
            if (prev != NULL)
                prev->qnext = nx;
            else
                __atomic_store_n(&g_q_head, nx, __ATOMIC_RELEASE);
            if (g_q_tail == it)
                g_q_tail = prev;
            it->qnext = NULL;
            it->in_dispatch = 0;
            g_q_len--;
            it->refs--;
            __atomic_store_n(&it->state, J_DONE, __ATOMIC_RELEASE);
            it->status = EDGEVM_ECLOSED;
            it->cmsg = msg;
            pthread_cond_signal(&it->cv);
        } else {
            prev = it;
        }
        it = nx;
    }
    /* async calls not answered yet: answer ECLOSED now (a late answer from the runtime is dropped) */
    while (h->pend_head != NULL) {
        job_t *j = h->pend_head;
        pending_remove_locked(h, j);
        if (j->in_dispatch)
            dequeue_locked(j);
        else
            __atomic_store_n(&j->state, J_ABANDONED, __ATOMIC_RELEASE);
        j->status = EDGEVM_ECLOSED;
        j->cmsg = msg;
        deliver_later_locked(h, j);
    }
    h->next_expire = 0;
}
