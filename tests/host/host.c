/*
 * host.c — a native host application that embeds edgevm through its C API, the way an app would:
 * it includes edgevm.h, links libedgevm, and never sees Python.
 *
 * It opens two runtimes, loads the demo bundle, checks ranking results against the Python API's
 * (files written by the test driver), runs inferences from several threads at once (sync and
 * async), tracks events, measures latency, exercises misuse (NULLs, lying lengths, invalid msgpack,
 * unknown codes, calls after close, double close, ...), shows that a script stuck in one long native
 * call cannot hold a host thread past its deadline, and closes everything.
 *
 *   host --keys DIR --bundle FILE --cases DIR [--threads N] [--iters N] [--quick] [--no-stuck]
 *        [--deadline-ms N] [--spin-us N (config capi_spin_us)]
 *   host --keys DIR --bundle FILE --cases DIR --bench N      (latency only; prints one JSON line)
 *   host --keys DIR --bundle FILE --cases DIR --serve --system S --business B [--threads N] [--iters N]
 *        (any bundle: load it, check the cases, serve them from several threads)
 *   host --keys DIR --bundle FILE --replay REQUESTS --replay-out RESULTS --system S --business B
 *        [--isolation process|thread] [--deadline-ms N]
 *        (requests: (u32 big-endian length, msgpack)*; results: (u32 code, u32 length, result or message)*)
 *
 * --cases DIR holds in_<i>.msgpack / out_<i>.msgpack pairs (input and the Python API's result) and
 * event.msgpack (an event for edgevm_track). Exit status 0 when every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "edgevm.h"

#define MAX_CASES 64

/* ---- small helpers ------------------------------------------------------------------------------ */

static int g_passed, g_failed;
static pthread_mutex_t g_print_mu = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&g_print_mu);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&g_print_mu);
}

/* CHECK(cond, what...): count it; print failures always, passes only in verbose detail mode. */
#define CHECK(cond, ...) check_((cond) ? 1 : 0, __LINE__, __VA_ARGS__)
static int check_(int ok, int line, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_print_mu);
    if (ok)
        g_passed++;
    else {
        g_failed++;
        printf("  FAIL (host.c:%d) %s\n", line, buf);
        fflush(stdout);
    }
    pthread_mutex_unlock(&g_print_mu);
    return ok;
}

/* expect a code and a non-empty message */
#define EXPECT_RC(rc, want, what)                                                                        \
    do {                                                                                                  \
        int rc_ = (rc);                                                                                   \
        const char *m_ = edgevm_errmsg(NULL);                                                             \
        CHECK(rc_ == (want) && m_ != NULL && m_[0] != '\0', "%s: got %d (%s), want %d; errmsg: %s", what, \
              rc_, edgevm_errcode_name(rc_), (want), m_ ? m_ : "(null)");                                 \
        misuse_count++;                                                                                   \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- a tiny msgpack printer (to show results as JSON-ish text) ---------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    char *out;
    size_t cap, len;
    int bad;
} mp_t;

static void mp_put(mp_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->out + m->len, m->cap > m->len ? m->cap - m->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->len = m->len + (size_t)n < m->cap ? m->len + (size_t)n : m->cap - 1;
}

static uint64_t mp_be(mp_t *m, int n)
{
    uint64_t v = 0;
    if (m->end - m->p < n) {
        m->bad = 1;
        return 0;
    }
    for (int i = 0; i < n; i++)
        v = (v << 8) | *m->p++;
    return v;
}

static void mp_value(mp_t *m, int depth)
{
    if (m->bad || m->p >= m->end || depth > 32) {
        m->bad = 1;
        return;
    }
    uint8_t t = *m->p++;
    uint64_t n = 0;
    int kind = 0; /* 1 str, 2 arr, 3 map, 4 bin */
    if (t <= 0x7f) { mp_put(m, "%u", t); return; }
    if (t >= 0xe0) { mp_put(m, "%d", (int8_t)t); return; }
    if ((t & 0xe0) == 0xa0) { n = t & 0x1f; kind = 1; }
    else if ((t & 0xf0) == 0x90) { n = t & 0x0f; kind = 2; }
    else if ((t & 0xf0) == 0x80) { n = t & 0x0f; kind = 3; }
    else switch (t) {
    case 0xc0: mp_put(m, "null"); return;
    case 0xc2: mp_put(m, "false"); return;
    case 0xc3: mp_put(m, "true"); return;
    case 0xcc: mp_put(m, "%llu", (unsigned long long)mp_be(m, 1)); return;
    case 0xcd: mp_put(m, "%llu", (unsigned long long)mp_be(m, 2)); return;
    case 0xce: mp_put(m, "%llu", (unsigned long long)mp_be(m, 4)); return;
    case 0xcf: mp_put(m, "%llu", (unsigned long long)mp_be(m, 8)); return;
    case 0xd0: mp_put(m, "%d", (int8_t)mp_be(m, 1)); return;
    case 0xd1: mp_put(m, "%d", (int16_t)mp_be(m, 2)); return;
    case 0xd2: mp_put(m, "%d", (int32_t)mp_be(m, 4)); return;
    case 0xd3: mp_put(m, "%lld", (long long)(int64_t)mp_be(m, 8)); return;
    case 0xca: { uint32_t b = (uint32_t)mp_be(m, 4); float f; memcpy(&f, &b, 4); mp_put(m, "%g", f); return; }
    case 0xcb: { uint64_t b = mp_be(m, 8); double d; memcpy(&d, &b, 8); mp_put(m, "%g", d); return; }
    case 0xd9: n = mp_be(m, 1); kind = 1; break;
    case 0xda: n = mp_be(m, 2); kind = 1; break;
    case 0xdb: n = mp_be(m, 4); kind = 1; break;
    case 0xc4: n = mp_be(m, 1); kind = 4; break;
    case 0xc5: n = mp_be(m, 2); kind = 4; break;
    case 0xc6: n = mp_be(m, 4); kind = 4; break;
    case 0xdc: n = mp_be(m, 2); kind = 2; break;
    case 0xdd: n = mp_be(m, 4); kind = 2; break;
    case 0xde: n = mp_be(m, 2); kind = 3; break;
    case 0xdf: n = mp_be(m, 4); kind = 3; break;
    default: m->bad = 1; return;
    }
    if (m->bad)
        return;
    if (kind == 1 || kind == 4) {
        if ((uint64_t)(m->end - m->p) < n) { m->bad = 1; return; }
        if (kind == 1)
            mp_put(m, "\"%.*s\"", (int)n, (const char *)m->p);
        else
            mp_put(m, "<%llu bytes>", (unsigned long long)n);
        m->p += n;
        return;
    }
    mp_put(m, kind == 2 ? "[" : "{");
    for (uint64_t i = 0; i < n && !m->bad; i++) {
        if (i)
            mp_put(m, ", ");
        mp_value(m, depth + 1);
        if (kind == 3) {
            mp_put(m, ": ");
            mp_value(m, depth + 1);
        }
    }
    mp_put(m, kind == 2 ? "]" : "}");
}

/* msgpack -> text in buf; returns 0 if the bytes are not exactly one msgpack value */
static int mp_text(const uint8_t *data, size_t len, char *buf, size_t cap)
{
    mp_t m = {data, data + len, buf, cap, 0, 0};
    buf[0] = '\0';
    mp_value(&m, 0);
    return !m.bad && m.p == m.end;
}

/* ---- test data ---------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *in, *out;
    size_t in_len, out_len;
} case_t;

static case_t g_cases[MAX_CASES];
static int g_ncases;
static uint8_t *g_event;
static size_t g_event_len;

static int load_cases(const char *dir)
{
    char path[4096];
    for (g_ncases = 0; g_ncases < MAX_CASES; g_ncases++) {
        case_t *c = &g_cases[g_ncases];
        snprintf(path, sizeof path, "%s/in_%d.msgpack", dir, g_ncases);
        c->in = read_file(path, &c->in_len);
        if (c->in == NULL)
            break;
        snprintf(path, sizeof path, "%s/out_%d.msgpack", dir, g_ncases);
        c->out = read_file(path, &c->out_len);
        if (c->out == NULL) {
            free(c->in);
            break;
        }
    }
    snprintf(path, sizeof path, "%s/event.msgpack", dir);
    g_event = read_file(path, &g_event_len);
    return g_ncases;
}

static int same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    return an == bn && memcmp(a, b, an) == 0;
}

/* ---- async completions ------------------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, mismatched;
    int by_status[100];
    double last_ms;
} tally_t;

static void tally_init(tally_t *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void tally_destroy(tally_t *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

static int tally_wait(tally_t *t, int n, int timeout_ms)
{
    double end = now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    while (t->done < n && now_ms() < end) {
        pthread_mutex_unlock(&t->mu);
        sleep_ms(2);
        pthread_mutex_lock(&t->mu);
    }
    int done = t->done;
    pthread_mutex_unlock(&t->mu);
    return done;
}

typedef struct {
    tally_t *tally;
    const case_t *expect; /* NULL: only count the status */
    int want_status;      /* -1: any */
    char msg[256];        /* the error message received */
} actx_t;

static void on_result(void *user_data, int status, const uint8_t *out, size_t out_len)
{
    actx_t *a = user_data;
    int ok = a->want_status < 0 || status == a->want_status;
    if (ok && a->expect != NULL)
        ok = status == EDGEVM_OK && same(out, out_len, a->expect->out, a->expect->out_len);
    if (status != EDGEVM_OK) {
        /* on failure the buffer is the NUL-terminated message, and errmsg says the same */
        snprintf(a->msg, sizeof a->msg, "%s", (const char *)out);
        if (strcmp(edgevm_errmsg(NULL), (const char *)out) != 0 || strlen((const char *)out) != out_len)
            ok = 0;
    }
    tally_t *t = a->tally;
    pthread_mutex_lock(&t->mu);
    t->done++;
    t->ok += ok;
    t->mismatched += !ok;
    t->by_status[status >= 0 && status < 100 ? status : 99]++;
    t->last_ms = now_ms();
    pthread_mutex_unlock(&t->mu);
}

/* ---- scenario pieces ---------------------------------------------------------------------------- */

static char g_config[8192];
static const char *g_keys;
static int g_process; /* "isolation": "process" (scripts run in worker processes) */
static const char *g_system = "home", *g_business = "rank"; /* the entry the cases are for */
static int misuse_count;

static void misuse_before_open(void)
{
    edgevm_t *vm = (edgevm_t *)0x1;
    uint8_t *out = (uint8_t *)0x1;
    size_t n = 7;
    const uint8_t in[] = {0x80};
    EXPECT_RC(edgevm_infer(NULL, "home", "rank", in, 1, &out, &n), EDGEVM_EINVAL, "infer on a NULL handle");
    CHECK(out == NULL && n == 0, "outputs are reset on failure");
    EXPECT_RC(edgevm_infer((edgevm_t *)0x1000, "home", "rank", in, 1, &out, &n), EDGEVM_EINVAL,
              "infer on a garbage handle");
    EXPECT_RC(edgevm_infer((edgevm_t *)(uintptr_t)0xdead5, "home", "rank", in, 1, &out, &n), EDGEVM_EINVAL,
              "infer on a handle-shaped garbage value");
    int local = 0;
    EXPECT_RC(edgevm_close((edgevm_t *)&local), EDGEVM_EINVAL, "close of a pointer to host memory");
    EXPECT_RC(edgevm_close(NULL), EDGEVM_EINVAL, "close(NULL)");
    EXPECT_RC(edgevm_open(NULL, &vm), EDGEVM_EINVAL, "open with a NULL config");
    CHECK(vm == NULL, "open resets *out on failure");
    EXPECT_RC(edgevm_open(g_config, NULL), EDGEVM_EINVAL, "open with a NULL out");
    EXPECT_RC(edgevm_open("this is not json", &vm), EDGEVM_EINVAL, "open with invalid JSON");
    EXPECT_RC(edgevm_open("[1, 2]", &vm), EDGEVM_EINVAL, "open with a JSON array");
    EXPECT_RC(edgevm_open("{}", &vm), EDGEVM_EINVAL, "open without keys");
    EXPECT_RC(edgevm_open("{\"keys\": \"/nonexistent/keys\"}", &vm), EDGEVM_ENOTFOUND, "open with missing keys");
    EXPECT_RC(edgevm_open("{\"keys\": \"/nonexistent\", \"no_such_option\": 1}", &vm), EDGEVM_EINVAL,
              "open with an unknown option");
    char cfg[sizeof g_config + 64];
    snprintf(cfg, sizeof cfg, "{\"keys\": \"%s\", \"deadline_ms\": -5}", g_keys);
    EXPECT_RC(edgevm_open(cfg, &vm), EDGEVM_EINVAL, "open with a negative deadline");
    snprintf(cfg, sizeof cfg, "{\"keys\": \"%s\", \"capi_margin_ms\": \"soon\"}", g_keys);
    EXPECT_RC(edgevm_open(cfg, &vm), EDGEVM_EINVAL, "open with a bad capi_margin_ms");
    EXPECT_RC(edgevm_open("{\"keys\": {\"verify\": [\"bm90IGEga2V5\"], \"decrypt\": []}}", &vm), EDGEVM_EINVAL,
              "open with bad inline keys");
    edgevm_free(NULL);
    int word = 0;
    edgevm_free(&word); /* not ours: must be ignored, not passed to free() */
    CHECK(strstr(edgevm_errmsg(NULL), "not allocated by edgevm") != NULL, "edgevm_free of a foreign pointer is "
          "ignored and noted: %s", edgevm_errmsg(NULL));
    CHECK(strcmp(edgevm_errcode_name(EDGEVM_ETIMEOUT), "timeout") == 0, "edgevm_errcode_name");
}

static void misuse_load(edgevm_t *vm, const uint8_t *bundle, size_t len)
{
    EXPECT_RC(edgevm_load_bundle(vm, NULL, len), EDGEVM_EINVAL, "load_bundle(NULL)");
    EXPECT_RC(edgevm_load_bundle(vm, bundle, 0), EDGEVM_EINVAL, "load_bundle of 0 bytes");
    EXPECT_RC(edgevm_load_bundle(vm, bundle, SIZE_MAX), EDGEVM_EINVAL, "load_bundle with a length that lies (huge)");
    EXPECT_RC(edgevm_load_bundle(vm, (const uint8_t *)"hello", 5), EDGEVM_EINVAL, "load_bundle of garbage");
    int rc = edgevm_load_bundle(vm, bundle, len - 100);
    CHECK(rc == EDGEVM_EINVAL || rc == EDGEVM_ESIGNATURE, "load_bundle with a length that lies (short): %d %s",
          rc, edgevm_errmsg(NULL));
    misuse_count++;
    uint8_t *bad = malloc(len);
    memcpy(bad, bundle, len);
    bad[len - 1] ^= 0x5a;
    EXPECT_RC(edgevm_load_bundle(vm, bad, len), EDGEVM_ESIGNATURE, "load_bundle of a tampered bundle");
    free(bad);
    EXPECT_RC(edgevm_load_file(vm, NULL), EDGEVM_EINVAL, "load_file(NULL)");
    EXPECT_RC(edgevm_load_file(vm, "/nonexistent/bundle.evb"), EDGEVM_ENOTFOUND, "load_file of a missing file");
}

static void misuse_infer(edgevm_t *vm)
{
    const case_t *c = &g_cases[0];
    uint8_t *out = NULL;
    size_t n = 0;
    const uint8_t invalid[] = {0xc1};               /* never valid msgpack */
    const uint8_t list[] = {0x93, 0x01, 0x02, 0x03}; /* [1, 2, 3]: wrong type for the entry */
    const uint8_t boom_in[] = {0x81, 0xa1, 'n', 0x01}; /* {"n": 1} */
    char longcode[2048];
    memset(longcode, 'x', sizeof longcode - 1);
    longcode[sizeof longcode - 1] = '\0';

    EXPECT_RC(edgevm_infer(vm, NULL, "rank", c->in, c->in_len, &out, &n), EDGEVM_EINVAL, "infer with NULL system");
    EXPECT_RC(edgevm_infer(vm, "home", NULL, c->in, c->in_len, &out, &n), EDGEVM_EINVAL, "infer with NULL business");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", NULL, 10, &out, &n), EDGEVM_EINVAL, "infer with NULL input");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, 0, &out, &n), EDGEVM_EINVAL, "infer with 0 bytes");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, SIZE_MAX, &out, &n), EDGEVM_EINVAL,
              "infer with a length that lies (huge)");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, c->in_len - 1, &out, &n), EDGEVM_EINVAL,
              "infer with a length that lies (short: truncated msgpack)");
    uint8_t *extra = malloc(c->in_len + 1);
    memcpy(extra, c->in, c->in_len);
    extra[c->in_len] = 0xc0;
    EXPECT_RC(edgevm_infer(vm, "home", "rank", extra, c->in_len + 1, &out, &n), EDGEVM_EINVAL,
              "infer with trailing bytes after the msgpack value");
    free(extra);
    EXPECT_RC(edgevm_infer(vm, "home", "rank", invalid, sizeof invalid, &out, &n), EDGEVM_EINVAL,
              "infer with invalid msgpack");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", list, sizeof list, &out, &n), EDGEVM_ESCRIPT,
              "infer with the wrong input type");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, c->in_len, NULL, &n), EDGEVM_EINVAL, "infer with NULL out");
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, c->in_len, &out, NULL), EDGEVM_EINVAL,
              "infer with NULL out_len");
    EXPECT_RC(edgevm_infer(vm, "home", "nope", c->in, c->in_len, &out, &n), EDGEVM_ENOTFOUND,
              "infer with an unknown business code");
    EXPECT_RC(edgevm_infer(vm, "nowhere", "rank", c->in, c->in_len, &out, &n), EDGEVM_ENOTFOUND,
              "infer with an unknown system code");
    EXPECT_RC(edgevm_infer(vm, longcode, "rank", c->in, c->in_len, &out, &n), EDGEVM_EINVAL,
              "infer with an over-long system code");
    EXPECT_RC(edgevm_infer(vm, "home", "\xff\xfe", c->in, c->in_len, &out, &n), EDGEVM_EINVAL,
              "infer with a business code that is not UTF-8");
    EXPECT_RC(edgevm_infer_ex(vm, "home", "rank", 7, 0, c->in, c->in_len, &out, &n), EDGEVM_EINVAL,
              "infer with an unknown priority");
    EXPECT_RC(edgevm_infer(vm, "home", "boom", boom_in, sizeof boom_in, &out, &n), EDGEVM_ESCRIPT,
              "infer of an entry that raises");
    CHECK(strstr(edgevm_errmsg(vm), "features.py:") && strstr(edgevm_errmsg(vm), "ZeroDivisionError"),
          "a script error names file:line and the exception: %s", edgevm_errmsg(vm));
    CHECK(out == NULL && n == 0, "no output buffer on failure");
}

/* ---- the threads ---------------------------------------------------------------------------------- */

typedef struct {
    int index, iters;
    edgevm_t *vms[2];
    tally_t *tally;
    actx_t *ctx; /* iters entries */
    double *lat; /* iters sync latencies */
    int sync_ok, tracked;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    /* edgevm_errmsg is per thread: other threads' calls meanwhile do not change this one's */
    char code[32];
    snprintf(code, sizeof code, "nope-%d", w->index);
    uint8_t *o = NULL;
    size_t on = 0;
    int rc0 = edgevm_infer(w->vms[0], "home", code, g_cases[0].in, g_cases[0].in_len, &o, &on);
    sleep_ms(10);
    CHECK(rc0 == EDGEVM_ENOTFOUND && strstr(edgevm_errmsg(NULL), code) != NULL,
          "thread %d: its own last error survives other threads' calls: %s", w->index, edgevm_errmsg(NULL));
    for (int k = 0; k < w->iters; k++) {
        edgevm_t *vm = w->vms[(w->index + k) % 2];
        const case_t *c = &g_cases[(w->index * 7 + k) % g_ncases];
        uint8_t *out = NULL;
        size_t n = 0;
        double t0 = now_ms();
        int rc = edgevm_infer(vm, g_system, g_business, c->in, c->in_len, &out, &n);
        w->lat[k] = now_ms() - t0;
        if (CHECK(rc == EDGEVM_OK, "thread %d: sync infer: %d %s", w->index, rc, edgevm_errmsg(vm)))
            w->sync_ok += CHECK(same(out, n, c->out, c->out_len), "thread %d: sync result equals the Python API's",
                                w->index);
        edgevm_free(out);

        actx_t *a = &w->ctx[k];
        a->tally = w->tally;
        a->expect = c;
        a->want_status = EDGEVM_OK;
        rc = edgevm_infer_async(vm, g_system, g_business, (w->index + k) % 3, c->in, c->in_len, on_result, a);
        CHECK(rc == EDGEVM_OK, "thread %d: async submit: %d %s", w->index, rc, edgevm_errmsg(vm));

        if (g_event != NULL && k % 5 == 0) {
            rc = edgevm_track(vm, g_event, g_event_len);
            w->tracked += CHECK(rc == EDGEVM_OK, "thread %d: track: %d %s", w->index, rc, edgevm_errmsg(vm));
        }
    }
    return NULL;
}

static void run_threads(edgevm_t *vm1, edgevm_t *vm2, int nthreads, int iters)
{
    tally_t tally;
    tally_init(&tally);
    worker_t *ws = calloc((size_t)nthreads, sizeof *ws);
    pthread_t *ts = calloc((size_t)nthreads, sizeof *ts);
    double t0 = now_ms();
    for (int i = 0; i < nthreads; i++) {
        ws[i] = (worker_t){.index = i, .iters = iters, .vms = {vm1, vm2}, .tally = &tally};
        ws[i].ctx = calloc((size_t)iters, sizeof(actx_t));
        ws[i].lat = calloc((size_t)iters, sizeof(double));
        pthread_create(&ts[i], NULL, worker_main, &ws[i]);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(ts[i], NULL);
    int want = nthreads * iters;
    int got = tally_wait(&tally, want, 30000);
    double elapsed = now_ms() - t0;
    int sync_ok = 0, tracked = 0;
    double *lat = calloc((size_t)want, sizeof(double));
    for (int i = 0; i < nthreads; i++) {
        sync_ok += ws[i].sync_ok;
        tracked += ws[i].tracked;
        memcpy(lat + (size_t)i * iters, ws[i].lat, (size_t)iters * sizeof(double));
    }
    qsort(lat, (size_t)want, sizeof(double), cmp_double);
    CHECK(got == want, "all %d async callbacks arrived (got %d)", want, got);
    CHECK(tally.ok == want, "all async results equal the Python API's (%d of %d)", tally.ok, want);
    say("[threads] %d host threads x %d iterations on %s: %d/%d sync and %d/%d async results "
        "equal the Python API's, %d events tracked; sync p50 %.3f ms, p99 %.3f ms; %.0f ms in all\n",
        nthreads, iters, vm1 == vm2 ? "one handle" : "2 handles at once", sync_ok, want, tally.ok, want, tracked, lat[want / 2], lat[(want * 99) / 100], elapsed);
    free(lat);
    for (int i = 0; i < nthreads; i++) {
        free(ws[i].ctx);
        free(ws[i].lat);
    }
    free(ws);
    free(ts);
    tally_destroy(&tally);
}

static void async_errors(edgevm_t *vm)
{
    tally_t tally;
    tally_init(&tally);
    const case_t *c = &g_cases[0];
    const uint8_t boom_in[] = {0x81, 0xa1, 'n', 0x01};
    actx_t a[3] = {{&tally, NULL, EDGEVM_ENOTFOUND, ""}, {&tally, NULL, EDGEVM_ESCRIPT, ""},
                   {&tally, NULL, EDGEVM_EINVAL, ""}};
    const uint8_t invalid[] = {0xc1};
    EXPECT_RC(edgevm_infer_async(vm, "home", "rank", 0, c->in, c->in_len, NULL, NULL), EDGEVM_EINVAL,
              "async with a NULL callback");
    EXPECT_RC(edgevm_infer_async(vm, "home", "rank", -1, c->in, c->in_len, on_result, &a[0]), EDGEVM_EINVAL,
              "async with a bad priority");
    EXPECT_RC(edgevm_infer_async(vm, "home", "rank", 0, NULL, 3, on_result, &a[0]), EDGEVM_EINVAL,
              "async with a NULL input");
    int submitted = 0;
    submitted += edgevm_infer_async(vm, "home", "nope", 1, c->in, c->in_len, on_result, &a[0]) == EDGEVM_OK;
    submitted += edgevm_infer_async(vm, "home", "boom", 1, boom_in, sizeof boom_in, on_result, &a[1]) == EDGEVM_OK;
    submitted += edgevm_infer_async(vm, "home", "rank", 1, invalid, sizeof invalid, on_result, &a[2]) == EDGEVM_OK;
    CHECK(submitted == 3, "async calls that fail later are accepted at submit");
    int got = tally_wait(&tally, 3, 10000);
    CHECK(got == 3 && tally.ok == 3, "their callbacks carry ENOTFOUND, ESCRIPT, EINVAL with messages (%d/%d ok)",
          tally.ok, got);
    say("[async]  failures arrive through the callback with a code and a message:\n"
        "           nope  -> %s: %s\n           boom  -> %s: %s\n           0xc1  -> %s: %s\n",
        edgevm_errcode_name(EDGEVM_ENOTFOUND), a[0].msg, edgevm_errcode_name(EDGEVM_ESCRIPT), a[1].msg,
        edgevm_errcode_name(EDGEVM_EINVAL), a[2].msg);
    tally_destroy(&tally);
}

/* Event-triggered tasks: a click event runs CountTask (calc) then ClickTask (infer, see bundle.json);
 * each task's result reaches the listener as a msgpack map. */
typedef struct {
    pthread_mutex_t mu;
    int events, clicks, bad;
    char last[512];
} lstate_t;

static void on_event(void *user_data, const uint8_t *data, size_t len)
{
    lstate_t *l = user_data;
    char text[1024];
    int ok = mp_text(data, len, text, sizeof text);
    pthread_mutex_lock(&l->mu);
    l->events++;
    if (!ok)
        l->bad++;
    else if (strstr(text, "\"task_name\": \"ClickTask\"") && strstr(text, "\"status\": 0")) {
        l->clicks++;
        snprintf(l->last, sizeof l->last, "%.500s", text);
    }
    pthread_mutex_unlock(&l->mu);
}

static void listener_check(edgevm_t *vm, lstate_t *l, int n)
{
    int rc = edgevm_set_listener(vm, on_event, l);
    CHECK(rc == EDGEVM_OK, "set_listener: %d %s", rc, edgevm_errmsg(vm));
    int tracked = 0;
    for (int i = 0; i < n; i++)
        tracked += edgevm_track(vm, g_event, g_event_len) == EDGEVM_OK;
    CHECK(tracked == n, "track %d click events", n);
    double end = now_ms() + 10000;
    int clicks = 0;
    while (now_ms() < end) {
        pthread_mutex_lock(&l->mu);
        clicks = l->clicks;
        pthread_mutex_unlock(&l->mu);
        if (clicks >= n)
            break;
        sleep_ms(5);
    }
    CHECK(clicks >= n && l->bad == 0, "the listener received every ClickTask result (%d of %d)", clicks, n);
    say("[events] %d tracked clicks -> %d task results through the listener, e.g. %s\n", n, l->events, l->last);
}

/* A script inside one long native call holds the interpreter lock for seconds. The host thread must
 * still get ETIMEOUT at its deadline; another thread that needs the interpreter (edgevm_metrics)
 * shows how long the lock was really held. */
typedef struct {
    edgevm_t *vm;
    double started, finished;
    int rc;
} metrics_probe_t;

static void *metrics_probe(void *arg)
{
    metrics_probe_t *p = arg;
    uint8_t *out = NULL;
    size_t n = 0;
    p->started = now_ms();
    p->rc = edgevm_metrics(p->vm, &out, &n);
    p->finished = now_ms();
    edgevm_free(out);
    return NULL;
}

static void stuck_script(edgevm_t *vm)
{
    const uint8_t in[] = {0x81, 0xa1, 'n', 0x64}; /* {"n": 100}: about a second per loop, each call starts one */
    const int deadline = 150;
    uint8_t *out = NULL;
    size_t n = 0;
    metrics_probe_t probe = {vm, 0, 0, -1};
    pthread_t t;

    double t0 = now_ms();
    tally_t tally;
    tally_init(&tally);
    actx_t a = {&tally, NULL, EDGEVM_ETIMEOUT, ""};
    /* async first: its timeout must come from the C delivery thread while the GIL is held */
    int rc = edgevm_infer_async_ex(vm, "home", "stuck", EDGEVM_PRIORITY_CORE, deadline, in, sizeof in, on_result, &a);
    CHECK(rc == EDGEVM_OK, "stuck async submit: %d %s", rc, edgevm_errmsg(vm));
    sleep_ms(20);
    pthread_create(&t, NULL, metrics_probe, &probe);
    double t1 = now_ms();
    rc = edgevm_infer_ex(vm, "home", "stuck", EDGEVM_PRIORITY_CORE, deadline, in, sizeof in, &out, &n);
    double sync_ms = now_ms() - t1;
    edgevm_free(out);
    int got = tally_wait(&tally, 1, 10000);
    double async_ms = tally.last_ms - t0;
    pthread_join(t, NULL);
    double held_ms = probe.finished - t0;
    CHECK(rc == EDGEVM_ETIMEOUT, "sync call into a stuck script returns ETIMEOUT: %d %s", rc, edgevm_errmsg(vm));
    CHECK(sync_ms < deadline + 400, "... at its deadline (%.0f ms for a %d ms deadline)", sync_ms, deadline);
    CHECK(got == 1 && tally.ok == 1, "async call into a stuck script gets ETIMEOUT through its callback");
    CHECK(async_ms < deadline + 400, "... at its deadline (%.0f ms)", async_ms);
    if (g_process) /* the script holds its worker's interpreter, never the host's */
        CHECK(probe.finished < t1 + sync_ms + deadline, "the host's interpreter stayed free (edgevm_metrics waited "
              "%.0f ms while the worker was stuck)", probe.finished - probe.started);
    else
        CHECK(held_ms > sync_ms + 200, "the interpreter lock was really held meanwhile (edgevm_metrics waited %.0f ms)",
              probe.finished - probe.started);
    if (g_process)
        say("[stuck]  home/stuck runs one long C loop holding its worker process's interpreter;\n"
            "         edgevm_infer (deadline %d ms) -> %s after %.0f ms; edgevm_infer_async -> %s after %.0f ms;\n"
            "         meanwhile edgevm_metrics (needs the host's interpreter) waited %.0f ms\n",
            deadline, edgevm_errcode_name(rc), sync_ms, edgevm_errcode_name(a.want_status), async_ms,
            probe.finished - probe.started);
    else
        say("[stuck]  home/stuck spends %.0f ms in one C loop holding the interpreter lock;\n"
            "         edgevm_infer (deadline %d ms) -> %s after %.0f ms; edgevm_infer_async -> %s after %.0f ms;\n"
            "         meanwhile edgevm_metrics (needs the interpreter) waited %.0f ms\n",
            held_ms, deadline, edgevm_errcode_name(rc), sync_ms, edgevm_errcode_name(a.want_status), async_ms,
            probe.finished - probe.started);
    tally_destroy(&tally);

    /* and the runtime recovers once the native calls end (both calls started one) */
    const case_t *c = &g_cases[0];
    double t2 = now_ms();
    for (int i = 0; i < 30; i++) {
        rc = edgevm_infer_ex(vm, "home", "rank", EDGEVM_PRIORITY_CORE, 500, c->in, c->in_len, &out, &n);
        if (rc == EDGEVM_OK)
            break;
    }
    CHECK(rc == EDGEVM_OK && same(out, n, c->out, c->out_len), "inference works again afterwards: %d %s", rc,
          edgevm_errmsg(vm));
    say("         the runtime served again %.0f ms later (stuck workers are retired and replaced)\n", now_ms() - t2);
    edgevm_free(out);
}

static void after_close(edgevm_t *vm)
{
    const case_t *c = &g_cases[0];
    uint8_t *out = NULL;
    size_t n = 0;
    actx_t a = {0};
    EXPECT_RC(edgevm_infer(vm, "home", "rank", c->in, c->in_len, &out, &n), EDGEVM_ECLOSED, "infer after close");
    CHECK(strstr(edgevm_errmsg(vm), "closed") != NULL, "errmsg says why: %s", edgevm_errmsg(vm));
    EXPECT_RC(edgevm_infer_async(vm, "home", "rank", 0, c->in, c->in_len, on_result, &a), EDGEVM_ECLOSED,
              "async after close");
    EXPECT_RC(edgevm_track(vm, c->in, c->in_len), EDGEVM_ECLOSED, "track after close");
    EXPECT_RC(edgevm_load_file(vm, "x.evb"), EDGEVM_ECLOSED, "load after close");
    EXPECT_RC(edgevm_metrics(vm, &out, &n), EDGEVM_ECLOSED, "metrics after close");
    EXPECT_RC(edgevm_set_listener(vm, NULL, NULL), EDGEVM_ECLOSED, "set_listener after close");
    EXPECT_RC(edgevm_close(vm), EDGEVM_ECLOSED, "double close");
}

static void close_with_pending(edgevm_t *vm, int count)
{
    tally_t tally;
    tally_init(&tally);
    actx_t *a = calloc((size_t)count, sizeof *a);
    const uint8_t slow_in[] = {0x81, 0xa1, 'n', 0xce, 0x00, 0x2d, 0xc6, 0xc0}; /* {"n": 3000000} */
    int accepted = 0;
    for (int i = 0; i < count; i++) {
        a[i] = (actx_t){&tally, NULL, -1, ""};
        accepted += edgevm_infer_async_ex(vm, "home", "slow", EDGEVM_PRIORITY_LOW, 5000, slow_in, sizeof slow_in,
                                          on_result, &a[i]) == EDGEVM_OK;
    }
    double t0 = now_ms();
    int rc = edgevm_close(vm);
    double close_ms = now_ms() - t0;
    pthread_mutex_lock(&tally.mu);
    int at_close = tally.done, closed = tally.by_status[EDGEVM_ECLOSED], okc = tally.by_status[EDGEVM_OK];
    pthread_mutex_unlock(&tally.mu);
    sleep_ms(300);
    pthread_mutex_lock(&tally.mu);
    int later = tally.done;
    pthread_mutex_unlock(&tally.mu);
    CHECK(rc == EDGEVM_OK, "close with %d calls pending: %d %s", accepted, rc, edgevm_errmsg(NULL));
    CHECK(at_close == accepted, "every pending callback ran before close returned (%d of %d)", at_close, accepted);
    CHECK(later == at_close, "no callback after close returned (%d then %d)", at_close, later);
    say("[close]  edgevm_close with %d slow async calls pending took %.0f ms: all %d callbacks ran before it "
        "returned (%d ECLOSED, %d finished), none after\n", accepted, close_ms, at_close, closed, okc);
    free(a);
    tally_destroy(&tally);
}

/* Threads keep calling while another thread closes the handle: every call returns OK or ECLOSED
 * (never a crash), and every accepted async call gets exactly one callback, before close returns. */
typedef struct {
    edgevm_t *vm;
    tally_t *tally;
    int index, calls, ok, closed, other, accepted;
    actx_t ctx[400];
} racer_t;

static void *racer_main(void *arg)
{
    racer_t *r = arg;
    const case_t *c = &g_cases[r->index % g_ncases];
    for (int k = 0; k < 400; k++) {
        uint8_t *out = NULL;
        size_t n = 0;
        int rc = edgevm_infer(r->vm, "home", "rank", c->in, c->in_len, &out, &n);
        edgevm_free(out);
        r->calls++;
        r->ok += rc == EDGEVM_OK;
        r->closed += rc == EDGEVM_ECLOSED;
        r->other += rc != EDGEVM_OK && rc != EDGEVM_ECLOSED && rc != EDGEVM_ETIMEOUT;
        r->ctx[k] = (actx_t){r->tally, NULL, -1, ""};
        rc = edgevm_infer_async(r->vm, "home", "rank", 1, c->in, c->in_len, on_result, &r->ctx[k]);
        r->accepted += rc == EDGEVM_OK;
        r->other += rc != EDGEVM_OK && rc != EDGEVM_ECLOSED;
        if (rc == EDGEVM_ECLOSED)
            break;
    }
    return NULL;
}

static void close_race(const char *bundle_path)
{
    edgevm_t *vm = NULL;
    int rc = edgevm_open(g_config, &vm);
    CHECK(rc == EDGEVM_OK && edgevm_load_file(vm, bundle_path) == EDGEVM_OK, "open and load for the close race");
    tally_t tally;
    tally_init(&tally);
    racer_t rs[4];
    pthread_t ts[4];
    for (int i = 0; i < 4; i++) {
        memset(&rs[i], 0, sizeof rs[i]);
        rs[i].vm = vm;
        rs[i].tally = &tally;
        rs[i].index = i;
        pthread_create(&ts[i], NULL, racer_main, &rs[i]);
    }
    sleep_ms(30);
    rc = edgevm_close(vm);
    pthread_mutex_lock(&tally.mu);
    int at_close = tally.done;
    pthread_mutex_unlock(&tally.mu);
    int calls = 0, ok = 0, closed = 0, other = 0, accepted = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(ts[i], NULL);
        calls += rs[i].calls, ok += rs[i].ok, closed += rs[i].closed, other += rs[i].other;
        accepted += rs[i].accepted;
    }
    sleep_ms(100);
    CHECK(rc == EDGEVM_OK, "close while 4 threads call: %d %s", rc, edgevm_errmsg(NULL));
    CHECK(other == 0, "every call returned OK or ECLOSED (%d others)", other);
    CHECK(tally.done == accepted, "every accepted async call got exactly one callback (%d of %d)", tally.done,
          accepted);
    CHECK(at_close <= accepted, "no callback beyond the accepted calls");
    say("[race]   4 threads calling while edgevm_close ran: %d sync calls (%d OK, %d ECLOSED), %d async calls "
        "accepted, each answered once; nothing else\n", calls, ok, closed, accepted);
    tally_destroy(&tally);
}

typedef struct {
    edgevm_t *vm;
    int rc;
    tally_t *tally;
} selfclose_t;

static void close_from_callback(void *user_data, int status, const uint8_t *out, size_t len)
{
    selfclose_t *s = user_data;
    (void)status, (void)out, (void)len;
    s->rc = edgevm_close(s->vm);
    pthread_mutex_lock(&s->tally->mu);
    s->tally->done++;
    pthread_mutex_unlock(&s->tally->mu);
}

static void close_inside_callback(void)
{
    edgevm_t *vm = NULL;
    tally_t tally;
    tally_init(&tally);
    int rc = edgevm_open(g_config, &vm);
    CHECK(rc == EDGEVM_OK, "open a third handle: %d %s", rc, edgevm_errmsg(NULL));
    const case_t *c = &g_cases[0];
    selfclose_t s = {vm, -1, &tally};
    rc = edgevm_infer_async(vm, "home", "rank", 0, c->in, c->in_len, close_from_callback, &s);
    CHECK(rc == EDGEVM_OK, "async on the third handle: %d", rc);
    int got = tally_wait(&tally, 1, 10000);
    sleep_ms(50);
    CHECK(got == 1 && s.rc == EDGEVM_OK, "edgevm_close from inside the handle's own callback: %d", s.rc);
    EXPECT_RC(edgevm_close(vm), EDGEVM_ECLOSED, "and it stays closed");
    say("[close]  edgevm_close from inside one of the handle's own callbacks -> %s\n", edgevm_errcode_name(s.rc));
    tally_destroy(&tally);
}

/* ---- main ----------------------------------------------------------------------------------------- */

static int bench(const char *bundle_path, int iters)
{
    edgevm_t *vm = NULL;
    if (edgevm_open(g_config, &vm) != EDGEVM_OK || edgevm_load_file(vm, bundle_path) != EDGEVM_OK) {
        fprintf(stderr, "bench: %s\n", edgevm_errmsg(NULL));
        return 1;
    }
    const case_t *c = &g_cases[0];
    double *lat = calloc((size_t)iters, sizeof(double));
    for (int i = 0; i < iters / 5 + 10; i++) { /* warm up */
        uint8_t *out;
        size_t n;
        edgevm_infer(vm, g_system, g_business, c->in, c->in_len, &out, &n);
        edgevm_free(out);
    }
    int bad = 0;
    for (int i = 0; i < iters; i++) {
        uint8_t *out;
        size_t n;
        double t0 = now_ms();
        int rc = edgevm_infer(vm, g_system, g_business, c->in, c->in_len, &out, &n);
        lat[i] = now_ms() - t0;
        bad += rc != EDGEVM_OK || !same(out, n, c->out, c->out_len);
        edgevm_free(out);
    }
    qsort(lat, (size_t)iters, sizeof(double), cmp_double);
    printf("{\"capi_p50_ms\": %.4f, \"capi_p90_ms\": %.4f, \"capi_min_ms\": %.4f, \"iters\": %d, \"mismatches\": %d}\n",
           lat[iters / 2], lat[(iters * 9) / 10], lat[0], iters, bad);
    free(lat);
    edgevm_close(vm);
    return bad != 0;
}

/* --serve: what an app does all day: open, load, answer requests from several threads, close. */
static int serve(const char *bundle_path, int nthreads, int iters)
{
    edgevm_t *vm = NULL;
    double t0 = now_ms();
    int rc = edgevm_open(g_config, &vm);
    double open_ms = now_ms() - t0;
    if (!CHECK(rc == EDGEVM_OK, "open: %d %s", rc, edgevm_errmsg(NULL)))
        return 1;
    t0 = now_ms();
    rc = edgevm_load_file(vm, bundle_path);
    double load_ms = now_ms() - t0;
    if (!CHECK(rc == EDGEVM_OK, "load %s: %d %s", bundle_path, rc, edgevm_errmsg(vm)))
        return 1;
    say("[serve]  edgevm_open %.1f ms, edgevm_load_file(%s) %.1f ms\n", open_ms, bundle_path, load_ms);
    char text[4096];
    int equal = 0;
    for (int i = 0; i < g_ncases; i++) {
        uint8_t *out = NULL;
        size_t n = 0;
        rc = edgevm_infer(vm, g_system, g_business, g_cases[i].in, g_cases[i].in_len, &out, &n);
        CHECK(rc == EDGEVM_OK, "%s/%s case %d: %d %s", g_system, g_business, i, rc, edgevm_errmsg(vm));
        equal += CHECK(same(out, n, g_cases[i].out, g_cases[i].out_len), "case %d equals the Python API's", i);
        if (i == 0 && mp_text(out, n, text, sizeof text))
            say("[serve]  %s/%s -> %.240s%s\n", g_system, g_business, text, strlen(text) > 240 ? " ..." : "");
        edgevm_free(out);
    }
    say("[serve]  %d/%d results byte-identical to the Python API's\n", equal, g_ncases);
    run_threads(vm, vm, nthreads, iters);
    rc = edgevm_close(vm);
    CHECK(rc == EDGEVM_OK, "close: %d %s", rc, edgevm_errmsg(NULL));
    for (int i = 0; i < g_ncases; i++) {
        free(g_cases[i].in);
        free(g_cases[i].out);
    }
    free(g_event);
    say("host: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}

/* ---- replay: requests from a file, results to a file (what a device computes, row by row) ---------- */

static int read_u32(FILE *f, uint32_t *v)
{
    uint8_t b[4];
    if (fread(b, 1, 4, f) != 4)
        return 0;
    *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    return 1;
}

static int write_u32(FILE *f, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return fwrite(b, 1, 4, f) == 4;
}

/* requests: (u32 big-endian length, msgpack input)*; results: (u32 code, u32 length, bytes)* with the
 * msgpack result for code 0 and the error message otherwise. */
static int replay(const char *bundle_path, const char *in_path, const char *out_path)
{
    edgevm_t *vm = NULL;
    int rc = edgevm_open(g_config, &vm);
    if (rc != EDGEVM_OK) {
        fprintf(stderr, "open: %d %s\n", rc, edgevm_errmsg(NULL));
        return 1;
    }
    rc = edgevm_load_file(vm, bundle_path);
    if (rc != EDGEVM_OK) {
        fprintf(stderr, "load: %d %s\n", rc, edgevm_errmsg(vm));
        edgevm_close(vm);
        return 1;
    }
    FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", in_path, out_path);
        return 1;
    }
    int rows = 0, failed = 0, bad = 0;
    uint32_t len;
    while (!bad && read_u32(in, &len)) {
        uint8_t *req = malloc(len ? len : 1);
        if (req == NULL || fread(req, 1, len, in) != len) {
            bad = 1;
            free(req);
            break;
        }
        uint8_t *res = NULL;
        size_t n = 0;
        rc = edgevm_infer(vm, g_system, g_business, req, len, &res, &n);
        const char *msg = rc == EDGEVM_OK ? NULL : edgevm_errmsg(vm);
        const uint8_t *body = rc == EDGEVM_OK ? res : (const uint8_t *)msg;
        size_t blen = rc == EDGEVM_OK ? n : strlen(msg);
        bad = !write_u32(out, (uint32_t)rc) || !write_u32(out, (uint32_t)blen) || fwrite(body, 1, blen, out) != blen;
        failed += rc != EDGEVM_OK;
        rows++;
        edgevm_free(res);
        free(req);
    }
    fclose(in);
    bad |= fclose(out) != 0;
    edgevm_close(vm);
    say("replay: %d rows, %d failed%s\n", rows, failed, bad ? "; the files were short or unwritable" : "");
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *keys = NULL, *bundle_path = NULL, *cases = NULL, *isolation = "process", *replay_in = NULL,
               *replay_out = NULL;
    int nthreads = 4, iters = 25, quick = 0, stuck = 1, bench_iters = 0, deadline_ms = 0, serving = 0, spin_us = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keys") && v) keys = argv[++i];
        else if (!strcmp(a, "--bundle") && v) bundle_path = argv[++i];
        else if (!strcmp(a, "--cases") && v) cases = argv[++i];
        else if (!strcmp(a, "--threads") && v) nthreads = atoi(argv[++i]);
        else if (!strcmp(a, "--iters") && v) iters = atoi(argv[++i]);
        else if (!strcmp(a, "--bench") && v) bench_iters = atoi(argv[++i]);
        else if (!strcmp(a, "--deadline-ms") && v) deadline_ms = atoi(argv[++i]);
        else if (!strcmp(a, "--spin-us") && v) spin_us = atoi(argv[++i]);
        else if (!strcmp(a, "--system") && v) g_system = argv[++i];
        else if (!strcmp(a, "--business") && v) g_business = argv[++i];
        else if (!strcmp(a, "--isolation") && v) isolation = argv[++i];
        else if (!strcmp(a, "--replay") && v) replay_in = argv[++i];
        else if (!strcmp(a, "--replay-out") && v) replay_out = argv[++i];
        else if (!strcmp(a, "--serve")) serving = 1;
        else if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--no-stuck")) stuck = 0;
        else {
            fprintf(stderr, "usage: %s --keys DIR --bundle FILE --cases DIR [--threads N] [--iters N] [--quick] "
                            "[--no-stuck] [--deadline-ms N] [--spin-us N] [--bench N] [--isolation process|thread] "
                            "[--serve --system S --business B] [--replay FILE --replay-out FILE --system S --business B]\n", argv[0]);
            return 2;
        }
    }
    if (replay_in != NULL && replay_out != NULL && keys != NULL && bundle_path != NULL) {
        snprintf(g_config, sizeof g_config, "{\"keys\": \"%s\", \"deadline_ms\": %d, \"isolation\": \"%s\"}",
                 keys, deadline_ms > 0 ? deadline_ms : 10000, isolation);
        return replay(bundle_path, replay_in, replay_out);
    }
    if (keys == NULL || bundle_path == NULL || cases == NULL) {
        fprintf(stderr, "%s: --keys, --bundle and --cases are required\n", argv[0]);
        return 2;
    }
    if (load_cases(cases) == 0) {
        fprintf(stderr, "%s: no cases in %s\n", argv[0], cases);
        return 2;
    }
    if (nthreads < 1) nthreads = 1;
    if (iters < 1) iters = 1;
    g_keys = keys;
    if (deadline_ms <= 0)
        deadline_ms = quick ? 5000 : 1000;
    g_process = strcmp(isolation, "process") == 0;
    int len = snprintf(g_config, sizeof g_config,
                       "{\"keys\": \"%s\", \"deadline_ms\": %d, \"workers\": 2, \"isolation\": \"%s\"", keys,
                       deadline_ms, isolation);
    if (spin_us >= 0)
        len += snprintf(g_config + len, sizeof g_config - (size_t)len, ", \"capi_spin_us\": %d", spin_us);
    snprintf(g_config + len, sizeof g_config - (size_t)len, "}");
    if (bench_iters > 0)
        return bench(bundle_path, bench_iters);
    if (serving)
        return serve(bundle_path, nthreads, iters);

    say("edgevm C host: libedgevm %s, %d test inputs\n", edgevm_version(), g_ncases);
    misuse_before_open();

    edgevm_t *vm1 = NULL, *vm2 = NULL;
    double t0 = now_ms();
    int rc = edgevm_open(g_config, &vm1);
    double open_ms = now_ms() - t0;
    if (!CHECK(rc == EDGEVM_OK, "open: %d %s", rc, edgevm_errmsg(NULL)))
        return 1;
    rc = edgevm_open(g_config, &vm2);
    if (!CHECK(rc == EDGEVM_OK, "open a second handle: %d %s", rc, edgevm_errmsg(NULL)))
        return 1;
    say("[open]   edgevm_open -> %s in %.1f ms (starts the embedded runtime); a second handle -> %s\n",
        edgevm_errcode_name(EDGEVM_OK), open_ms, edgevm_errcode_name(rc));

    size_t blen = 0;
    uint8_t *bundle = read_file(bundle_path, &blen);
    if (!CHECK(bundle != NULL && blen > 200, "read %s", bundle_path))
        return 1;
    misuse_load(vm1, bundle, blen);
    t0 = now_ms();
    rc = edgevm_load_file(vm1, bundle_path);
    double load_ms = now_ms() - t0;
    CHECK(rc == EDGEVM_OK, "load_file: %d %s", rc, edgevm_errmsg(vm1));
    rc = edgevm_load_bundle(vm2, bundle, blen);
    CHECK(rc == EDGEVM_OK, "load_bundle from memory: %d %s", rc, edgevm_errmsg(vm2));
    say("[load]   %s (%zu bytes): verified, decrypted and loaded in %.1f ms (from a file) and from memory\n",
        bundle_path, blen, load_ms);

    char text[4096], want[4096];
    int equal = 0;
    for (int i = 0; i < g_ncases; i++) {
        uint8_t *out = NULL;
        size_t n = 0;
        rc = edgevm_infer(vm1, "home", "rank", g_cases[i].in, g_cases[i].in_len, &out, &n);
        CHECK(rc == EDGEVM_OK, "infer case %d: %d %s", i, rc, edgevm_errmsg(vm1));
        equal += CHECK(same(out, n, g_cases[i].out, g_cases[i].out_len), "case %d equals the Python API's result", i);
        CHECK(mp_text(out, n, text, sizeof text), "case %d result is one msgpack value", i);
        if (i == 0) {
            say("[infer]  home/rank -> %s\n", text);
        } else if (!same(out, n, g_cases[i].out, g_cases[i].out_len)) {
            mp_text(g_cases[i].out, g_cases[i].out_len, want, sizeof want);
            say("         case %d differs: C API %s, Python API %s\n", i, text, want);
        }
        edgevm_free(out);
        edgevm_free(out); /* a double free is ignored, not a crash */
    }
    say("[infer]  %d/%d results byte-identical to the Python API's for the same inputs\n", equal, g_ncases);

    int before = misuse_count;
    misuse_infer(vm1);
    say("[misuse] NULLs, lengths that lie, invalid msgpack, wrong types, unknown codes: %d calls, each an error "
        "code with a message (e.g. \"%s\")\n", misuse_count - before, edgevm_errmsg(vm1));

    if (g_event != NULL) {
        rc = edgevm_track(vm1, g_event, g_event_len);
        CHECK(rc == EDGEVM_OK, "track: %d %s", rc, edgevm_errmsg(vm1));
        const uint8_t invalid[] = {0xc1};
        EXPECT_RC(edgevm_track(vm1, invalid, 1), EDGEVM_EINVAL, "track of invalid msgpack");
        EXPECT_RC(edgevm_track(vm1, NULL, 4), EDGEVM_EINVAL, "track(NULL)");
    }

    lstate_t lstate;
    memset(&lstate, 0, sizeof lstate);
    pthread_mutex_init(&lstate.mu, NULL);
    if (g_event != NULL)
        listener_check(vm1, &lstate, 3);

    async_errors(vm1);
    run_threads(vm1, vm2, quick ? 2 : nthreads, quick ? 3 : iters);

    uint8_t *m = NULL;
    size_t mlen = 0;
    rc = edgevm_metrics(vm1, &m, &mlen);
    int is_map = m != NULL && mlen > 0 && ((m[0] & 0xf0) == 0x80 || m[0] == 0xde || m[0] == 0xdf);
    CHECK(rc == EDGEVM_OK && is_map, "metrics is a msgpack map: %d %s", rc, edgevm_errmsg(vm1));
    CHECK(m != NULL && mp_text(m, mlen, text, sizeof text), "metrics decode");
    say("[metrics] %.300s%s\n", text, strlen(text) > 300 ? " ..." : "");
    edgevm_free(m);
    EXPECT_RC(edgevm_metrics(vm1, NULL, &mlen), EDGEVM_EINVAL, "metrics with NULL out");

    if (stuck && !quick)
        stuck_script(vm1);

    close_with_pending(vm2, quick ? 3 : 12);
    before = misuse_count;
    after_close(vm2);
    say("[close]  calls on the closed handle, and a second close: %d calls -> %s with a message\n",
        misuse_count - before, edgevm_errcode_name(EDGEVM_ECLOSED));
    if (!quick) {
        close_inside_callback();
        close_race(bundle_path);
    }

    if (g_event != NULL)
        CHECK(edgevm_set_listener(vm1, NULL, NULL) == EDGEVM_OK, "remove the listener: %s", edgevm_errmsg(vm1));
    uint8_t *out = NULL;
    size_t n = 0;
    /* (the second stuck call's C loop may still hold the interpreter on a loaded machine) */
    for (int i = 0; i < 20; i++) {
        rc = edgevm_infer(vm1, "home", "rank", g_cases[0].in, g_cases[0].in_len, &out, &n);
        if (rc != EDGEVM_ETIMEOUT)
            break;
    }
    CHECK(rc == EDGEVM_OK, "the first handle still works after the others closed: %d %s", rc, edgevm_errmsg(vm1));
    edgevm_free(out);
    rc = edgevm_close(vm1);
    CHECK(rc == EDGEVM_OK, "close: %d %s", rc, edgevm_errmsg(NULL));
    EXPECT_RC(edgevm_close(vm1), EDGEVM_ECLOSED, "double close");
    free(bundle);
    for (int i = 0; i < g_ncases; i++) {
        free(g_cases[i].in);
        free(g_cases[i].out);
    }
    free(g_event);
    pthread_mutex_destroy(&lstate.mu);
    say("host: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
