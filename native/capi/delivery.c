/*
 * delivery.c — the delivery thread, one per handle (plain C, never holding g_mu or the GIL while a
 * host function runs): it calls the host's async callbacks and listener, one at a time, in completion
 * order, and answers async calls whose deadline (plus margin) passed with ETIMEOUT itself.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capi_private.h"

INTERNAL void deliver_later_locked(handle_t *h, job_t *j)
{
    j->qnext = NULL;
    if (h->dq_tail != NULL)
        h->dq_tail->qnext = j;
    else
        h->dq_head = j;
    h->dq_tail = j;
    pthread_cond_signal(&h->cv);
}

static void call_back(job_t *j, int status, const char *fallback)
{
    /* g_mu is not held here */
    const uint8_t *data;
    size_t len;
    if (j->out != NULL) {
        data = j->out;
        len = j->out_len;
    } else {
        const char *m = j->cmsg != NULL ? j->cmsg : fallback;
        data = (const uint8_t *)m;
        len = strlen(m);
    }
    if (status != EDGEVM_OK)
        msg_set_raw((const char *)data, len);
    else
        msg_clear();
    j->cb(j->ud, status, data, len);
}

INTERNAL void *delivery_main(void *arg)
{
    handle_t *h = arg;
    char tmsg[512];
    pthread_mutex_lock(&g_mu);
    for (;;) {
        uint64_t now = mono_ns();
        if (h->next_expire != 0 && now >= h->next_expire) {
            /* answer expired async calls ourselves: the runtime did not (e.g. the GIL is held) */
            job_t *exp = NULL;
            uint64_t next = 0;
            for (job_t *j = h->pend_head; j != NULL; j = j->pnext) {
                if (exp == NULL && j->expire_ns <= now)
                    exp = j;
                else if (next == 0 || j->expire_ns < next)
                    next = j->expire_ns;
            }
            h->next_expire = next; /* the earliest of the others (0: none) */
            if (exp != NULL) {
                pending_remove_locked(h, exp);
                if (exp->in_dispatch)
                    dequeue_locked(exp);
                else
                    __atomic_store_n(&exp->state, J_ABANDONED, __ATOMIC_RELEASE);
                h->n.c_timeouts++;
                snprintf(tmsg, sizeof tmsg,
                         "edgevm_infer_async(%.200s/%.200s): no result within the deadline of %d ms",
                         exp->pub.system, exp->pub.business, exp->deadline_ms);
                pthread_mutex_unlock(&g_mu);
                call_back(exp, EDGEVM_ETIMEOUT, tmsg);
                pthread_mutex_lock(&g_mu);
                h->n.callbacks++;
                job_release_locked(exp);
                continue;
            }
        }
        if (h->dq_head != NULL) {
            job_t *j = h->dq_head;
            h->dq_head = j->qnext;
            if (h->dq_head == NULL)
                h->dq_tail = NULL;
            j->qnext = NULL;
            int status = j->status;
            pthread_mutex_unlock(&g_mu);
            call_back(j, status, "edgevm: the call failed");
            pthread_mutex_lock(&g_mu);
            h->n.callbacks++;
            job_release_locked(j);
            continue;
        }
        if (h->eq_head != NULL) {
            event_t *ev = h->eq_head;
            h->eq_head = ev->next;
            if (h->eq_head == NULL)
                h->eq_tail = NULL;
            edgevm_listener cb = ev->update ? h->update_listener : h->listener;
            void *ud = ev->update ? h->update_listener_ud : h->listener_ud;
            if (cb != NULL)
                h->n.events++;
            else
                h->n.events_dropped++;
            pthread_mutex_unlock(&g_mu);
            if (cb != NULL) {
                msg_clear();
                cb(ud, ev->data, ev->len);
            }
            free(ev);
            pthread_mutex_lock(&g_mu);
            continue;
        }
        if (h->stop && h->pend_head == NULL)
            break;
        h->waiting = 1;
        h->wait_until = h->next_expire;
        if (h->wait_until != 0) {
            struct timespec ts = ns_to_ts(h->wait_until);
            pthread_cond_timedwait(&h->cv, &g_mu, &ts);
        } else {
            pthread_cond_wait(&h->cv, &g_mu);
        }
        h->waiting = 0;
    }
    handle_release_locked(h); /* the delivery thread's reference */
    pthread_mutex_unlock(&g_mu);
    return NULL;
}
