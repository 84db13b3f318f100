/*
 * edgevm.h — the edgevm C API: embed the edgevm runtime in a host application.
 *
 * Link one shared library (libedgevm) and include this header; `edgevm capi-flags` prints the exact
 * compiler and linker flags (or `edgevm capi-flags --pkg-config` a pkg-config file). The first call
 * to edgevm_open() starts the embedded runtime; the host never deals with Python.
 *
 * Conventions (as in SQLite and Lua):
 *   - Every function returns an EDGEVM_* code: EDGEVM_OK (0) on success, a positive code on failure.
 *     After any call, edgevm_errmsg() gives a message for the calling thread's last call.
 *   - Wire format: msgpack in, msgpack out. Input buffers are copied or read during the call only;
 *     the host keeps ownership of everything it passes in.
 *   - Buffers edgevm returns through an `uint8_t **out` parameter are allocated by edgevm, owned by
 *     the caller from then on, and released with edgevm_free(). Buffers passed to callbacks belong to
 *     edgevm and are valid only while the callback runs (copy what you keep).
 *   - Threads: every function may be called from any host thread, concurrently, on one or several
 *     handles. No input crashes the process: NULL pointers, lengths over the configured limits,
 *     invalid msgpack, unknown codes, handles that were closed (or never were handles) each return a
 *     code with a message.
 *   - Only edgevm_infer, edgevm_infer_ex, edgevm_infer_async, edgevm_errmsg and edgevm_free are
 *     guaranteed never to wait for the embedded interpreter: they wait (if at all) in plain C, bounded
 *     by the call's deadline, even while a script is stuck inside one long native call. The other
 *     functions run Python on the calling thread and may wait while such a call holds the interpreter.
 *
 * Handles are opaque values, not pointers to memory: edgevm never dereferences an edgevm_t *, it
 * looks the value up in its own table, so a stale or garbage handle is an error, never a crash.
 * Handles are never reused within a process.
 */
#ifndef EDGEVM_H
#define EDGEVM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define EDGEVM_API __declspec(dllimport)
#elif defined(__GNUC__)
#  define EDGEVM_API __attribute__((visibility("default")))
#else
#  define EDGEVM_API
#endif

#define EDGEVM_VERSION "0.1.0" /* the runtime's version: vm.__version__ in Python */

/* An open runtime. Opaque: obtained from edgevm_open(), released by edgevm_close(). */
typedef struct edgevm edgevm_t;

/* Return codes. The same numbers are vm.errors.EdgeError.code on the Python side. */
enum {
    EDGEVM_OK = 0,
    EDGEVM_EINVAL = 1,        /* bad argument or input: NULL, over a limit, invalid msgpack/JSON, wrong type */
    EDGEVM_ESIGNATURE = 2,    /* the bundle's signature does not verify against a pinned key */
    EDGEVM_EDECRYPT = 3,      /* a correctly signed bundle this device cannot decrypt */
    EDGEVM_EINCOMPATIBLE = 4, /* bundle format, runtime version or bytecode this device does not support */
    EDGEVM_EPOLICY = 5,       /* the sandbox policy refused code or a call */
    EDGEVM_ESCRIPT = 6,       /* the script raised; the message says file:line, type and text */
    EDGEVM_ETIMEOUT = 7,      /* no result before the deadline */
    EDGEVM_ENOTFOUND = 8,     /* unknown system/business code, missing file or key */
    EDGEVM_EBUSY = 9,         /* the runtime refused new work (full queue, no healthy worker) */
    EDGEVM_ECLOSED = 10,      /* the handle was closed (or is being closed) */
    EDGEVM_ERESOURCE = 11,    /* a script exceeded its memory budget or the recursion limit */
    EDGEVM_EDOWNGRADE = 12,   /* a bundle older than the one already loaded under the same name */
    EDGEVM_ECIRCUIT = 13,     /* the entry's circuit breaker is open; the call failed fast */
    EDGEVM_ECRASHED = 14,     /* the worker process running the call died or misbehaved; it was replaced */
    EDGEVM_EINTERNAL = 99     /* a bug in edgevm, or the embedded runtime could not start */
};

/* Priorities for edgevm_infer_async / edgevm_infer_ex (the scheduler's three queues). */
enum {
    EDGEVM_PRIORITY_CORE = 0,   /* user-facing, latency critical (edgevm_infer uses this) */
    EDGEVM_PRIORITY_NORMAL = 1,
    EDGEVM_PRIORITY_LOW = 2     /* background work */
};

/*
 * edgevm_open — start a runtime.
 *   config_json: NUL-terminated UTF-8 JSON object, the runtime configuration, e.g.
 *     {"keys": "/path/to/keygen-dir", "deadline_ms": 200, "isolation": "process"}
 *     "keys" is a keygen directory, a device.json path, or inline {"verify": [...], "decrypt": [...]}
 *     base64 keys. "isolation": "process" (the default on Linux and Android: every bundle runs in
 *     locked-down worker processes started from edgevm-zygote, which must stay beside libedgevm) or
 *     "thread" (scripts run in this process). Optional: "device_profile" (object), "workers",
 *     "spare_workers", "memory_limit_mb", "queue_size",
 *     "max_input_bytes", "max_bundle_bytes", "load_deadline_ms", "allow_downgrade", ...; and two of
 *     the C layer: "capi_margin_ms" (how long past a call's deadline the C side waits for the
 *     runtime's own answer before it answers EDGEVM_ETIMEOUT itself; default 25) and "capi_spin_us"
 *     (how long a waiting thread polls before it sleeps; default 200, 0 = never poll). Unknown
 *     options are EDGEVM_EINVAL.
 *   out: receives the handle (set to NULL on failure).
 *   The first call in a process also starts the embedded interpreter (isolated: PYTHON* variables
 *   are ignored except PYTHONMALLOC; EDGEVM_PYTHONHOME, EDGEVM_PYTHONPATH and EDGEVM_LOG are read,
 *   see docs/c-api.md); if that fails, this and every later call returns EDGEVM_EINTERNAL and
 *   edgevm_errmsg() says why.
 *   Threading: may be called from any thread; takes the interpreter lock.
 *   Errors: EINVAL (NULL, not JSON, not an object, bad option), ENOTFOUND (keys not found), EINTERNAL.
 */
EDGEVM_API int edgevm_open(const char *config_json, edgevm_t **out);

/*
 * edgevm_load_bundle / edgevm_load_file — verify (Ed25519), decrypt, gate and load a bundle, from
 * memory (data/len, read during the call only) or from a file. A newer version of an already loaded
 * bundle replaces it atomically; an older one is EDGEVM_EDOWNGRADE unless "allow_downgrade".
 *   Errors: EINVAL (NULL, len 0 or over "max_bundle_bytes", not a bundle), ESIGNATURE, EDECRYPT,
 *   EINCOMPATIBLE, EPOLICY, ESCRIPT (module top level raised), ECRASHED (a worker died loading it),
 *   ETIMEOUT ("load_deadline_ms"), ENOTFOUND (file), EDOWNGRADE, ECLOSED, EINTERNAL.
 *   Ownership: data/path are read during the call only. Threading: any thread; takes the interpreter
 *   lock; concurrent loads are safe.
 */
EDGEVM_API int edgevm_load_bundle(edgevm_t *vm, const uint8_t *data, size_t len);
EDGEVM_API int edgevm_load_file(edgevm_t *vm, const char *path);

/*
 * edgevm_infer — run the entry registered for system_code/business_code on a msgpack input and wait
 * for its msgpack result, at most the runtime's "deadline_ms" (plus "capi_margin_ms").
 *   in_msgpack/in_len: the input, copied before the call returns (in_len over "max_input_bytes" is
 *     EINVAL and the buffer is not read).
 *   out_msgpack/out_len: on EDGEVM_OK receive a buffer the caller owns and frees with edgevm_free();
 *     on failure they are set to NULL/0.
 *   Waits in plain C: a script stuck in a long native call cannot delay the return past the deadline
 *   (the abandoned call is cleaned up when it ends).
 *   Errors: EINVAL (NULL, empty/oversized/invalid msgpack, codes not UTF-8 or longer than 1024 bytes),
 *   ENOTFOUND (no such entry), ESCRIPT, EPOLICY, ERESOURCE, ETIMEOUT, EBUSY, ECIRCUIT, ECRASHED, ECLOSED,
 *   EINTERNAL.
 *   Threading: any thread, any number at once; never takes the interpreter lock on the calling thread
 *   (the call is handed to the runtime's dispatcher and waited for on a condition variable).
 */
EDGEVM_API int edgevm_infer(edgevm_t *vm, const char *system_code, const char *business_code,
                            const uint8_t *in_msgpack, size_t in_len, uint8_t **out_msgpack, size_t *out_len);

/* edgevm_infer_ex — edgevm_infer with a priority (EDGEVM_PRIORITY_*) and a deadline in milliseconds
 * (deadline_ms <= 0: the runtime's "deadline_ms"). */
EDGEVM_API int edgevm_infer_ex(edgevm_t *vm, const char *system_code, const char *business_code, int priority,
                               int deadline_ms, const uint8_t *in_msgpack, size_t in_len,
                               uint8_t **out_msgpack, size_t *out_len);

/*
 * edgevm_callback — the result of one edgevm_infer_async call.
 *   status: EDGEVM_OK, then out_msgpack/out_len is the msgpack result; otherwise an EDGEVM_E* code,
 *     then out_msgpack is the NUL-terminated UTF-8 error message (out_len excludes the NUL), the same
 *     text edgevm_errmsg() returns inside the callback.
 *   The buffer belongs to edgevm and is valid only during the callback.
 *   Threading: callbacks (and listener calls, below) of one handle run on that handle's delivery
 *   thread, a plain C thread owned by edgevm, one at a time. A callback may call any edgevm function,
 *   including edgevm_close on its own handle; while it runs, the handle's other callbacks wait.
 */
typedef void (*edgevm_callback)(void *user_data, int status, const uint8_t *out_msgpack, size_t out_len);

/*
 * edgevm_infer_async — queue an inference and return at once. Never waits for the interpreter.
 *   priority: EDGEVM_PRIORITY_CORE, _NORMAL or _LOW. The deadline is the runtime's "deadline_ms",
 *   counted from this call (edgevm_infer_async_ex takes one).
 *   Returns EDGEVM_OK when queued: then cb is called exactly once, with the result or an error
 *   (ENOTFOUND, ESCRIPT, ETIMEOUT, EBUSY, ECLOSED if the handle is closed first, ...), at the latest
 *   at the deadline plus "capi_margin_ms". Any other return code means cb will never be called.
 *   Errors returned directly: EINVAL (NULL codes/input/cb, empty or oversized input, bad priority),
 *   ECLOSED, EINTERNAL.
 *   Ownership: the input is copied before this returns; user_data is passed back untouched (keep it
 *   alive until the callback ran, or until edgevm_close returned). Threading: any thread; never takes
 *   the interpreter lock; cb runs on the handle's delivery thread (see edgevm_callback).
 */
EDGEVM_API int edgevm_infer_async(edgevm_t *vm, const char *system_code, const char *business_code, int priority,
                                  const uint8_t *in_msgpack, size_t in_len, edgevm_callback cb, void *user_data);
EDGEVM_API int edgevm_infer_async_ex(edgevm_t *vm, const char *system_code, const char *business_code,
                                     int priority, int deadline_ms, const uint8_t *in_msgpack, size_t in_len,
                                     edgevm_callback cb, void *user_data);

/*
 * edgevm_track — report one behaviour event (a msgpack map, e.g. {"type": "click", "ts": ..., ...}): it is
 * stored in the table its "table" names, when the runtime has an event store (config "data",
 * docs/data.md), and matched against the loaded bundles' triggers: it may start tasks whose results
 * reach the listener. A refused event is stored nowhere and fires nothing.
 *   Errors: EINVAL (NULL, empty, over "max_input_bytes", invalid msgpack, not a map, an unknown table,
 *   a missing, unknown or mistyped field, over "data.max_event_bytes"; counted in the metrics'
 *   events.refused), ERESOURCE (the store cannot write: a full disk), ECLOSED, EINTERNAL. A triggered task that the queues or a circuit breaker refuse is skipped and counted in
 *   the metrics, not an error of this call.
 *   Ownership: read during the call only. Threading: any thread; takes the interpreter lock.
 */
EDGEVM_API int edgevm_track(edgevm_t *vm, const uint8_t *event_msgpack, size_t len);

/*
 * edgevm_listener — receives the result of each event-triggered task: a msgpack map with keys
 * task_id, task_name, kind, bundle, system, business, status (an EDGEVM_* code), result (the task's
 * msgpack value, nil on failure) and error (message or nil). Buffer valid during the call only.
 * Runs on the handle's delivery thread (see edgevm_callback).
 */
typedef void (*edgevm_listener)(void *user_data, const uint8_t *event_msgpack, size_t len);

/*
 * edgevm_set_listener — register (cb != NULL) or remove (cb == NULL) the handle's listener; replaces
 * any previous one. A listener call already running when this returns may still finish.
 *   Errors: ECLOSED, EINVAL, EINTERNAL. Threading: any thread; takes the interpreter lock.
 *   user_data is passed back untouched; keep it alive until the listener is replaced or removed and
 *   any call in progress returned (or until edgevm_close returned).
 */
EDGEVM_API int edgevm_set_listener(edgevm_t *vm, edgevm_listener cb, void *user_data);

/*
 * edgevm_update_now — check the update channel (config "update", docs/ota.md) now and install what is
 * new for this device: download, verify, hot swap. What happened is the result, not the return code:
 * *out_msgpack receives a msgpack array of event maps, in order, each with "event" ("checked",
 * "downloaded", "activated" or "refused") and, as they apply, "bundle", "version", "reason" (text),
 * "error" (a stable error name, e.g. "downgrade", "bad_signature") and "bytes". An unreachable channel
 * or a refused bundle is a "refused" event with EDGEVM_OK; the device keeps serving what it had.
 *   Errors: EINVAL (NULL out, or no "update" in the config), EBUSY, ECLOSED, EINTERNAL.
 *   Ownership: *out_msgpack is owned by the caller: edgevm_free() it (NULL/0 on failure).
 *   Threading: any thread; takes the interpreter lock; waits for the download and the swap (bounded by
 *   "update.timeout_s", "update.download_timeout_s" and "load_deadline_ms"). The same events also
 *   reach the update listener.
 */
EDGEVM_API int edgevm_update_now(edgevm_t *vm, uint8_t **out_msgpack, size_t *out_len);

/*
 * edgevm_set_update_listener — register (cb != NULL) or remove (cb == NULL) the handle's update
 * listener; replaces any previous one. cb receives each update event as one msgpack map (the keys of
 * edgevm_update_now's events; "event" is also "confirmed" when a new version passed probation, and
 * "rolled_back" with "to" when it failed it or ended the process in a crash loop), whether a check
 * came from edgevm_update_now or the background poller. The first listener set also receives the events
 * of the start (a crash-loop rollback), which happened before it could be set.
 *   Runs on the handle's delivery thread (see edgevm_callback); the buffer is valid during the call only.
 *   Errors: EINVAL (no "update" in the config), ECLOSED, EINTERNAL. Threading: any thread; takes the
 *   interpreter lock. user_data: as for edgevm_set_listener.
 */
EDGEVM_API int edgevm_set_update_listener(edgevm_t *vm, edgevm_listener cb, void *user_data);

/*
 * edgevm_metrics — the runtime's counters as a msgpack map (queues, latencies, failures, circuit
 * breakers, per bundle version under "versions", the loaded versions and their A/B groups under
 * "bundles", and a "capi" map of C-side counters). *out is owned by the caller: edgevm_free() it.
 *   Errors: EINVAL (NULL out), ECLOSED, EINTERNAL. Threading: any thread; takes the interpreter lock.
 */
EDGEVM_API int edgevm_metrics(edgevm_t *vm, uint8_t **out_msgpack, size_t *out_len);

/*
 * edgevm_errmsg — the message of the calling thread's last edgevm call ("not an error" after a
 * success). Thread-local: other threads' calls do not change it. The string belongs to edgevm and is
 * valid until the calling thread's next edgevm call. vm is only for symmetry: it may be NULL or closed.
 * Never NULL. Threading: any thread; never blocks.
 */
EDGEVM_API const char *edgevm_errmsg(edgevm_t *vm);

/* edgevm_errcode_name — a stable short name for a code ("ok", "bad_input", ..., "internal"). */
EDGEVM_API const char *edgevm_errcode_name(int code);

/*
 * edgevm_free — release a buffer edgevm returned to the caller (edgevm_infer, edgevm_metrics).
 * NULL is ignored; a pointer edgevm did not hand out, or one already freed, is ignored too (and
 * noted in edgevm_errmsg) instead of corrupting memory. Threading: any thread; never blocks; does not
 * change edgevm_errmsg() unless the pointer is refused.
 */
EDGEVM_API void edgevm_free(void *p);

/*
 * edgevm_close — close a handle. New calls on it return EDGEVM_ECLOSED at once; calls in progress
 * finish or fail with ECLOSED; every edgevm_infer_async callback still pending is called (with its
 * result, or ECLOSED) before edgevm_close returns, and no callback or listener call of this handle
 * runs afterwards — except when edgevm_close is called from one of the handle's own callbacks: then
 * the remaining callbacks run on that thread after the current one returns.
 *   Errors: EINVAL (NULL or not a handle), ECLOSED (already closed: double close is safe), EINTERNAL.
 *   Threading: any thread, also concurrently with calls on the same handle (they finish or get
 *   ECLOSED); takes the interpreter lock; waits for the runtime's workers up to its "close_timeout_ms".
 *   After it returns the handle value stays invalid forever (ids are never reused).
 */
EDGEVM_API int edgevm_close(edgevm_t *vm);

/* edgevm_version — the library version string (EDGEVM_VERSION). */
EDGEVM_API const char *edgevm_version(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEVM_H */
