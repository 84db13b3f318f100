/*
 * handles.c — the handle table. A handle is an id encoded in the edgevm_t * value and looked up in
 * g_live, never dereferenced; ids are never reused, so a closed handle is ECLOSED forever and a value
 * that was never a handle is EINVAL.
 */
#include <stdlib.h>

#include "capi_private.h"

#define HANDLE_TAG 0x5u
#define HANDLE_SHIFT 4

INTERNAL pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static handle_t *g_live;
static uint64_t g_next_id = 1;

INTERNAL edgevm_t *encode_handle(uint64_t id)
{
    return (edgevm_t *)(uintptr_t)((id << HANDLE_SHIFT) | HANDLE_TAG);
}

/* Decode without dereferencing: 0 if vm cannot be a handle value. */
static uint64_t decode_handle(const edgevm_t *vm)
{
    uintptr_t v = (uintptr_t)vm;
    if ((v & ((1u << HANDLE_SHIFT) - 1)) != HANDLE_TAG)
        return 0;
    return (uint64_t)(v >> HANDLE_SHIFT);
}

INTERNAL uint64_t new_handle_id(void)
{
    pthread_mutex_lock(&g_mu);
    uint64_t id = g_next_id++;
    pthread_mutex_unlock(&g_mu);
    return id;
}

INTERNAL handle_t *find_live_locked(uint64_t id)
{
    for (handle_t *h = g_live; h != NULL; h = h->next)
        if (h->id == id)
            return h;
    return NULL;
}

/* Make an opened handle visible to the other calls (g_live takes the reference h->refs counts). */
INTERNAL void publish(handle_t *h)
{
    pthread_mutex_lock(&g_mu);
    h->next = g_live;
    g_live = h;
    pthread_mutex_unlock(&g_mu);
}

INTERNAL void handle_release_locked(handle_t *h)
{
    if (--h->refs == 0) {
        pthread_cond_destroy(&h->cv);
        free(h);
    }
}

INTERNAL int acquire(edgevm_t *vm, const char *fn, handle_t **out)
{
    *out = NULL;
    if (vm == NULL)
        return fail(EDGEVM_EINVAL, "%s: vm is NULL", fn);
    uint64_t id = decode_handle(vm);
    pthread_mutex_lock(&g_mu);
    if (id == 0 || id >= g_next_id) {
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_EINVAL, "%s: %p is not a handle returned by edgevm_open", fn, (void *)vm);
    }
    handle_t *h = find_live_locked(id);
    if (h == NULL || h->closing) {
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_ECLOSED, "%s: the handle was closed", fn);
    }
    h->refs++;
    pthread_mutex_unlock(&g_mu);
    *out = h;
    return EDGEVM_OK;
}

INTERNAL void release(handle_t *h)
{
    pthread_mutex_lock(&g_mu);
    handle_release_locked(h);
    pthread_mutex_unlock(&g_mu);
}

INTERNAL int retire(edgevm_t *vm, const char *fn, handle_t **out)
{
    *out = NULL;
    if (vm == NULL)
        return fail(EDGEVM_EINVAL, "%s: vm is NULL", fn);
    uint64_t id = decode_handle(vm);
    pthread_mutex_lock(&g_mu);
    if (id == 0 || id >= g_next_id) {
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_EINVAL, "%s: %p is not a handle returned by edgevm_open", fn, (void *)vm);
    }
    handle_t *h = find_live_locked(id);
    if (h == NULL || h->closing) {
        pthread_mutex_unlock(&g_mu);
        return fail(EDGEVM_ECLOSED, "%s: the handle was already closed", fn);
    }
    h->closing = 1;
    for (handle_t **link = &g_live; *link != NULL; link = &(*link)->next) {
        if (*link == h) {
            *link = h->next;
            break;
        }
    }
    h->next = NULL; /* g_live's reference is now the caller's */
    pthread_mutex_unlock(&g_mu);
    *out = h;
    return EDGEVM_OK;
}
