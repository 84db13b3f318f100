/*
 * track_host.c — a native host that stores behaviour events through the C API, the way an app
 * would: edgevm_track of msgpack events it encodes itself, then edgevm_infer of an entry that reads
 * them back through edge.events, and edgevm_metrics.
 *
 *   track_host CONFIG_JSON BUNDLE_FILE RECORDS_FILE N
 *
 * CONFIG_JSON configures "data" with a table "clicks" {type: str, item_id: int, price: float,
 * query_text: str}. The host tracks N click events (ts 1000000 + i, item_id i, price i + 0.5,
 * query_text "secret query <i>"), then a bad event of each class: bytes that are not msgpack, a
 * truncated event, an array instead of a map, a wrong type, a missing field, an unknown table, an
 * unknown field; each must be EDGEVM_EINVAL ("bad_input") with a message. The entry's result
 * ('R': the columns it read) and the metrics ('M') go to RECORDS_FILE as tag byte, 4-byte big-endian
 * length, msgpack, for the driver to decode. Exit status 0 when every check passed.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgevm.h"

static int g_passed, g_failed;
static FILE *g_records;

#define CHECK(ok, ...) check_((ok), __LINE__, __VA_ARGS__)
static int check_(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int check_(int ok, int line, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        g_passed++;
        return ok;
    }
    g_failed++;
    fprintf(stdout, "FAIL line %d: ", line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    return ok;
}

static void record(char tag, const uint8_t *data, size_t len)
{
    uint8_t head[5] = {(uint8_t)tag, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    fwrite(head, 1, sizeof head, g_records);
    fwrite(data, 1, len, g_records);
    fflush(g_records);
}

/* ---- a minimal msgpack writer: what an app's own encoder would produce ------------------------- */

typedef struct {
    uint8_t buf[512];
    size_t len;
} mp_out;

static void mp_byte(mp_out *m, uint8_t b) { m->buf[m->len++] = b; }

static void mp_be64(mp_out *m, uint64_t v)
{
    for (int shift = 56; shift >= 0; shift -= 8)
        mp_byte(m, (uint8_t)(v >> shift));
}

static void mp_map(mp_out *m, int n) { mp_byte(m, (uint8_t)(0x80 | n)); }   /* fixmap: n < 16 */
static void mp_array(mp_out *m, int n) { mp_byte(m, (uint8_t)(0x90 | n)); } /* fixarray: n < 16 */

static void mp_str(mp_out *m, const char *s)
{
    size_t n = strlen(s); /* str8: n < 256 */
    mp_byte(m, 0xd9);
    mp_byte(m, (uint8_t)n);
    memcpy(m->buf + m->len, s, n);
    m->len += n;
}

static void mp_int(mp_out *m, int64_t v)
{
    mp_byte(m, 0xd3);
    mp_be64(m, (uint64_t)v);
}

static void mp_float(mp_out *m, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    mp_byte(m, 0xcb);
    mp_be64(m, bits);
}

/* A click event; `broken` makes it bad in one way (0: a good event). */
enum { GOOD, WRONG_TYPE, MISSING_FIELD, UNKNOWN_TABLE, UNKNOWN_FIELD };

static void click(mp_out *m, int i, int broken)
{
    char text[64];
    snprintf(text, sizeof text, "secret query %d", i);
    m->len = 0;
    mp_map(m, broken == MISSING_FIELD ? 5 : broken == UNKNOWN_FIELD ? 7 : 6);
    mp_str(m, "table");
    mp_str(m, broken == UNKNOWN_TABLE ? "nope" : "clicks");
    mp_str(m, "ts");
    mp_int(m, 1000000 + i);
    mp_str(m, "type");
    mp_str(m, "click");
    mp_str(m, "item_id");
    if (broken == WRONG_TYPE)
        mp_str(m, "not an int");
    else
        mp_int(m, i);
    if (broken != MISSING_FIELD) {
        mp_str(m, "price");
        mp_float(m, i + 0.5);
    }
    mp_str(m, "query_text");
    mp_str(m, text);
    if (broken == UNKNOWN_FIELD) {
        mp_str(m, "extra");
        mp_int(m, 1);
    }
}

static void refused(edgevm_t *vm, const uint8_t *data, size_t len, const char *what)
{
    int rc = edgevm_track(vm, data, len);
    CHECK(rc == EDGEVM_EINVAL && strcmp(edgevm_errcode_name(rc), "bad_input") == 0 && edgevm_errmsg(vm)[0] != '\0',
          "track of %s: %d (%s) %s", what, rc, edgevm_errcode_name(rc), edgevm_errmsg(vm));
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s CONFIG_JSON BUNDLE_FILE RECORDS_FILE N\n", argv[0]);
        return 2;
    }
    g_records = fopen(argv[3], "wb");
    if (g_records == NULL)
        return 2;
    int n = atoi(argv[4]);
    edgevm_t *vm = NULL;
    int rc = edgevm_open(argv[1], &vm);
    if (!CHECK(rc == EDGEVM_OK, "open: %d %s", rc, edgevm_errmsg(NULL)))
        return 1;
    rc = edgevm_load_file(vm, argv[2]);
    CHECK(rc == EDGEVM_OK, "load: %d %s", rc, edgevm_errmsg(vm));

    mp_out m;
    int tracked = 0;
    for (int i = 0; i < n; i++) {
        click(&m, i, GOOD);
        rc = edgevm_track(vm, m.buf, m.len);
        tracked += CHECK(rc == EDGEVM_OK, "track %d: %d %s", i, rc, edgevm_errmsg(vm));
    }

    static const uint8_t garbage[] = {0xc1, 0xff, 0x00, 0x13}; /* 0xc1 is never used by msgpack */
    refused(vm, garbage, sizeof garbage, "bytes that are not msgpack");
    click(&m, n, GOOD);
    refused(vm, m.buf, m.len - 3, "a truncated event");
    mp_out arr = {.len = 0};
    mp_array(&arr, 2);
    mp_int(&arr, 1);
    mp_int(&arr, 2);
    refused(vm, arr.buf, arr.len, "an array");
    click(&m, n, WRONG_TYPE);
    refused(vm, m.buf, m.len, "a str for an int field");
    click(&m, n, MISSING_FIELD);
    refused(vm, m.buf, m.len, "an event without a field");
    click(&m, n, UNKNOWN_TABLE);
    refused(vm, m.buf, m.len, "an unknown table");
    click(&m, n, UNKNOWN_FIELD);
    refused(vm, m.buf, m.len, "an unknown field");

    static const uint8_t empty_map[] = {0x80}; /* {} */
    uint8_t *out = NULL;
    size_t out_len = 0;
    rc = edgevm_infer(vm, "s", "read", empty_map, sizeof empty_map, &out, &out_len);
    if (CHECK(rc == EDGEVM_OK && out != NULL, "infer read: %d %s", rc, edgevm_errmsg(vm)))
        record('R', out, out_len);
    edgevm_free(out);
    rc = edgevm_metrics(vm, &out, &out_len);
    if (CHECK(rc == EDGEVM_OK && out != NULL, "metrics: %d %s", rc, edgevm_errmsg(vm)))
        record('M', out, out_len);
    edgevm_free(out);
    CHECK(edgevm_close(vm) == EDGEVM_OK, "close: %s", edgevm_errmsg(NULL));
    fclose(g_records);
    printf("host: %d tracked; %d passed, %d failed\n", tracked, g_passed, g_failed);
    return g_failed ? 1 : 0;
}
