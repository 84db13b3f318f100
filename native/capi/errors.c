/*
 * errors.c — error reporting: the calling thread's last message (edgevm_errmsg), fail(), the status
 * protocol of the functions implemented in Python, and the stable names of the codes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "capi_private.h"

#define MSG_SIZE 4096

static __thread char tls_msg[MSG_SIZE];
static __thread int tls_has_msg;

INTERNAL void msg_clear(void) { tls_has_msg = 0; }

INTERNAL void msg_set_raw(const char *text, size_t len)
{
    if (len >= MSG_SIZE) {
        len = MSG_SIZE - 4;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80) /* cut on a UTF-8 boundary */
            len--;
        memcpy(tls_msg, text, len);
        memcpy(tls_msg + len, "...", 4);
    } else {
        memcpy(tls_msg, text, len);
        tls_msg[len] = '\0';
    }
    tls_has_msg = 1;
}

INTERNAL void msg_set(const char *fmt, ...)
{
    char buf[MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    msg_set_raw(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

INTERNAL int fail(int code, const char *fmt, ...)
{
    char buf[MSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    msg_set_raw(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    return code;
}

INTERNAL void edgevm__set_error(const char *message)
{
    if (message != NULL)
        msg_set_raw(message, strlen(message));
}

INTERNAL int py_result(int status, const char *fn)
{
    if (status == -1)
        return fail(EDGEVM_EINTERNAL, "%s: the embedded runtime did not answer (see stderr)", fn);
    if (status != EDGEVM_OK && !tls_has_msg)
        return fail(status, "%s: failed with code %d", fn, status);
    if (status == EDGEVM_OK)
        msg_clear();
    return status;
}

EDGEVM_API const char *edgevm_errmsg(edgevm_t *vm)
{
    (void)vm;
    return tls_has_msg ? tls_msg : "not an error";
}

/* The names are vm.errors' EdgeError.name (tests/host/test_capi_contract.py checks them). */
EDGEVM_API const char *edgevm_errcode_name(int code)
{
    switch (code) {
    case EDGEVM_OK: return "ok";
    case EDGEVM_EINVAL: return "bad_input";
    case EDGEVM_ESIGNATURE: return "signature";
    case EDGEVM_EDECRYPT: return "decrypt";
    case EDGEVM_EINCOMPATIBLE: return "incompatible";
    case EDGEVM_EPOLICY: return "policy";
    case EDGEVM_ESCRIPT: return "script";
    case EDGEVM_ETIMEOUT: return "timeout";
    case EDGEVM_ENOTFOUND: return "not_found";
    case EDGEVM_EBUSY: return "busy";
    case EDGEVM_ECLOSED: return "closed";
    case EDGEVM_ERESOURCE: return "resource";
    case EDGEVM_EDOWNGRADE: return "downgrade";
    case EDGEVM_ECIRCUIT: return "circuit_open";
    case EDGEVM_ECRASHED: return "crashed";
    case EDGEVM_EINTERNAL: return "internal";
    default: return "unknown";
    }
}
