/*
 * update_host.c — a native host that updates its bundles over the air through the C API, the way an
 * app would: edgevm_set_update_listener, edgevm_update_now, edgevm_infer, edgevm_metrics.
 *
 *   update_host CONFIG_JSON PLAIN_CONFIG_JSON RECORDS_FILE
 *
 * CONFIG_JSON configures "update" (a channel where the driver published feat 1.0.0, probation of 4
 * calls); PLAIN_CONFIG_JSON does not. The host activates 1.0.0 and passes its probation, says
 * "waiting" and reads a line (the driver publishes a 2.0.0 whose entry raises on {"boom": true}),
 * activates 2.0.0, fails it until it is rolled back, checks 1.0.0 serves again and 2.0.0 is not
 * retried, and exercises misuse. Every update_now result ('U'), listener event ('L'), the last
 * inference result ('R') and the metrics ('M') go to RECORDS_FILE as tag byte, 4-byte big-endian
 * length, msgpack, for the driver to decode. Exit status 0 when every check passed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edgevm.h"

static int g_passed, g_failed;
static FILE *g_records;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_confirmed, g_rolled_back, g_events;

#define CHECK(ok, ...) check_((ok), __LINE__, __VA_ARGS__)
static int check_(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#include <stdarg.h>
static int check_(int ok, int line, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&g_mu);
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        fprintf(stdout, "FAIL line %d: ", line);
        va_start(ap, fmt);
        vfprintf(stdout, fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
    }
    pthread_mutex_unlock(&g_mu);
    return ok;
}

static void record(char tag, const uint8_t *data, size_t len)
{
    uint8_t head[5] = {(uint8_t)tag, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    pthread_mutex_lock(&g_mu);
    fwrite(head, 1, sizeof head, g_records);
    fwrite(data, 1, len, g_records);
    fflush(g_records);
    pthread_mutex_unlock(&g_mu);
}

static int has(const uint8_t *data, size_t len, const char *text)
{
    return data != NULL && memmem(data, len, text, strlen(text)) != NULL;
}

/* The update listener: runs on the handle's delivery thread; the buffer is ours during the call only. */
static void on_update(void *user_data, const uint8_t *event, size_t len)
{
    int *calls = user_data;
    record('L', event, len);
    pthread_mutex_lock(&g_mu);
    (*calls)++;
    g_events++;
    g_confirmed += has(event, len, "confirmed");
    g_rolled_back += has(event, len, "rolled_back");
    pthread_mutex_unlock(&g_mu);
}

static int wait_for(int *counter, int at_least)
{
    for (int i = 0; i < 6000; i++) { /* up to a minute, in 10 ms steps */
        pthread_mutex_lock(&g_mu);
        int n = *counter;
        pthread_mutex_unlock(&g_mu);
        if (n >= at_least)
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int update_now(edgevm_t *vm, const char *expect)
{
    uint8_t *out = NULL;
    size_t n = 0;
    int rc = edgevm_update_now(vm, &out, &n);
    CHECK(rc == EDGEVM_OK && out != NULL && n > 0, "update_now: %d %s", rc, edgevm_errmsg(vm));
    if (out != NULL) {
        record('U', out, n);
        CHECK(has(out, n, expect), "update_now reports %s", expect);
    }
    edgevm_free(out);
    return rc;
}

static int infer(edgevm_t *vm, const uint8_t *in, size_t len, int keep)
{
    uint8_t *out = NULL;
    size_t n = 0;
    int rc = edgevm_infer(vm, "s", "b", in, len, &out, &n);
    if (rc == EDGEVM_OK && keep)
        record('R', out, n);
    edgevm_free(out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s CONFIG_JSON PLAIN_CONFIG_JSON RECORDS_FILE\n", argv[0]);
        return 2;
    }
    g_records = fopen(argv[3], "wb");
    if (g_records == NULL)
        return 2;
    static const uint8_t ok_in[] = {0x80};                                    /* {} */
    static const uint8_t boom_in[] = {0x81, 0xa4, 'b', 'o', 'o', 'm', 0xc3}; /* {"boom": true} */
    int listener_calls = 0;
    edgevm_t *vm = NULL, *plain = NULL;
    int rc = edgevm_open(argv[1], &vm);
    if (!CHECK(rc == EDGEVM_OK, "open: %d %s", rc, edgevm_errmsg(NULL)))
        return 1;
    rc = edgevm_set_update_listener(vm, on_update, &listener_calls);
    CHECK(rc == EDGEVM_OK, "set_update_listener: %d %s", rc, edgevm_errmsg(vm));

    /* 1.0.0: checked, downloaded, activated; its first 4 calls pass probation (confirmed) */
    update_now(vm, "activated");
    for (int i = 0; i < 4; i++)
        CHECK(infer(vm, ok_in, sizeof ok_in, 0) == EDGEVM_OK, "infer on 1.0.0: %s", edgevm_errmsg(vm));
    CHECK(wait_for(&g_confirmed, 1), "the listener heard 1.0.0 confirmed");

    printf("waiting\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL)
        return 2;

    /* 2.0.0 fails its probation: rolled back to 1.0.0 by the updater's thread, never retried */
    update_now(vm, "activated");
    for (int i = 0; i < 2; i++) /* probation_failures is 1: the second failure decides */
        CHECK(infer(vm, boom_in, sizeof boom_in, 0) == EDGEVM_ESCRIPT, "2.0.0 raises: %s", edgevm_errmsg(vm));
    CHECK(wait_for(&g_rolled_back, 1), "the listener heard 2.0.0 rolled back");
    CHECK(infer(vm, ok_in, sizeof ok_in, 1) == EDGEVM_OK, "1.0.0 serves again: %s", edgevm_errmsg(vm));
    update_now(vm, "checked");

    uint8_t *m = NULL;
    size_t mlen = 0;
    rc = edgevm_metrics(vm, &m, &mlen);
    CHECK(rc == EDGEVM_OK && has(m, mlen, "versions"), "metrics per version: %d %s", rc, edgevm_errmsg(vm));
    if (m != NULL)
        record('M', m, mlen);
    edgevm_free(m);

    /* misuse: each an error code with a message, never a crash */
    size_t n = 0;
    uint8_t *out = (uint8_t *)&n;
    CHECK(edgevm_update_now(vm, NULL, &n) == EDGEVM_EINVAL, "update_now(NULL out)");
    CHECK(edgevm_update_now(vm, &out, NULL) == EDGEVM_EINVAL && out == NULL, "update_now(NULL len) clears out");
    CHECK(edgevm_update_now(NULL, &out, &n) == EDGEVM_EINVAL, "update_now(NULL handle)");
    rc = edgevm_open(argv[2], &plain);
    CHECK(rc == EDGEVM_OK, "open without update: %d %s", rc, edgevm_errmsg(NULL));
    rc = edgevm_update_now(plain, &out, &n);
    CHECK(rc == EDGEVM_EINVAL && strstr(edgevm_errmsg(plain), "no update channel") != NULL,
          "update_now without a channel: %d %s", rc, edgevm_errmsg(plain));
    rc = edgevm_set_update_listener(plain, on_update, &listener_calls);
    CHECK(rc == EDGEVM_EINVAL, "set_update_listener without a channel: %d %s", rc, edgevm_errmsg(plain));
    CHECK(edgevm_close(plain) == EDGEVM_OK, "close the plain handle");

    CHECK(edgevm_set_update_listener(vm, NULL, NULL) == EDGEVM_OK, "remove the update listener");
    pthread_mutex_lock(&g_mu);
    int before = g_events;
    pthread_mutex_unlock(&g_mu);
    update_now(vm, "checked"); /* reported in the result, no longer to the removed listener */
    CHECK(edgevm_close(vm) == EDGEVM_OK, "close: %s", edgevm_errmsg(NULL));
    pthread_mutex_lock(&g_mu);
    int after = g_events;
    pthread_mutex_unlock(&g_mu);
    CHECK(after == before, "no listener call after it was removed (%d, %d)", after, before);
    CHECK(edgevm_update_now(vm, &out, &n) == EDGEVM_ECLOSED, "update_now after close");
    CHECK(edgevm_set_update_listener(vm, on_update, NULL) == EDGEVM_ECLOSED, "set_update_listener after close");
    fclose(g_records);
    printf("host: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
