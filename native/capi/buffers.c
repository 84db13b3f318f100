/*
 * buffers.c — buffers handed to the caller (edgevm_infer's and edgevm_metrics' results), freed with
 * edgevm_free. Each one is registered, so that edgevm_free of a pointer edgevm did not hand out (or
 * already took back) is refused instead of corrupting memory.
 */
#include <stdlib.h>

#include "capi_private.h"

typedef struct obuf {
    struct obuf *next;
    size_t len;
} obuf_t; /* 16 bytes on 64-bit targets: the payload that follows keeps malloc's alignment */

#define OBUF_BUCKETS 1024
static obuf_t *g_obufs[OBUF_BUCKETS];
static pthread_mutex_t g_obuf_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t obuf_bucket(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    v ^= v >> 17;
    v *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(v >> 7) % OBUF_BUCKETS;
}

INTERNAL uint8_t *edgevm__out_alloc(size_t len)
{
    if (len > SIZE_MAX - sizeof(obuf_t))
        return NULL;
    obuf_t *o = malloc(sizeof(obuf_t) + (len ? len : 1));
    if (o == NULL)
        return NULL;
    o->len = len;
    uint8_t *p = (uint8_t *)(o + 1);
    size_t b = obuf_bucket(p);
    pthread_mutex_lock(&g_obuf_mu);
    o->next = g_obufs[b];
    g_obufs[b] = o;
    pthread_mutex_unlock(&g_obuf_mu);
    return p;
}

/* Unregister p; returns its block or NULL if p is not an outstanding buffer. Only edgevm's own
 * blocks are ever dereferenced: p itself is compared, never read. */
static obuf_t *obuf_take(const void *p)
{
    size_t b = obuf_bucket(p);
    obuf_t *found = NULL;
    pthread_mutex_lock(&g_obuf_mu);
    for (obuf_t **link = &g_obufs[b]; *link != NULL; link = &(*link)->next) {
        if ((const void *)(*link + 1) == p) {
            found = *link;
            *link = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_obuf_mu);
    return found;
}

INTERNAL void out_discard(void *p) { free(obuf_take(p)); }

EDGEVM_API void edgevm_free(void *p)
{
    if (p == NULL)
        return;
    obuf_t *o = obuf_take(p);
    if (o == NULL) {
        msg_set("edgevm_free: %p was not allocated by edgevm or was already freed (ignored)", p);
        return;
    }
    free(o);
}
