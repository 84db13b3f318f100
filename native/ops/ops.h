/* edgevm native feature operators.
 *
 * Plain C11, libc + libm only. Every function validates what it depends on for memory safety
 * itself (indices, offsets, depths, sizes are checked where they are used), so no input can make it
 * read or write out of bounds; the Python wrapper (vm/ml/ops.py) does the friendly validation and
 * turns the status codes below into TypeError/ValueError. No function keeps global state, calls
 * back into Python or takes locks; all are safe to call from several threads at once (the Vocab
 * table is read-only after it is built).
 *
 * Conventions: arrays are C-contiguous and aligned for their element type; `n` counts elements or
 * rows; a status `int` is returned (OPS_OK == 0) and, where it helps, the offending position is
 * stored through `err_index`. Strings are passed as one UTF-8 buffer plus either an offsets array
 * (n + 1 entries, string i is buf[off[i]:off[i+1]]) or, when `offsets` is NULL, as n strings
 * separated by single NUL bytes (OPS_ESEPARATOR if the buffer does not split into exactly n).
 */
#ifndef EDGEVM_OPS_H
#define EDGEVM_OPS_H

#include <stdint.h>

#define OPS_OK 0
#define OPS_ENOMEM 1       /* malloc failed */
#define OPS_EINVAL 2       /* an argument out of its domain (err_index may say which element) */
#define OPS_EUNSORTED 3    /* timestamps decrease at err_index */
#define OPS_EKEY 4         /* key / group out of range at err_index */
#define OPS_EOFFSETS 5     /* CSR offsets not monotone / outside the ids (at err_index) */
#define OPS_EBOUNDARIES 6  /* bucket boundaries not strictly increasing (at err_index) */
#define OPS_EUNICODE 7     /* invalid code point at string err_index */
#define OPS_EDUPLICATE 8   /* duplicate vocabulary token at err_index */
#define OPS_ESEPARATOR 9   /* NUL-separated buffer does not hold exactly n strings */
#define OPS_ETOOBIG 10     /* a size over OPS_MAX_ELEMENTS */

/* Largest number of elements any input, output or work buffer may have (1 GiB of float32). */
#define OPS_MAX_ELEMENTS 268435456

/* ---- hashing ---------------------------------------------------------------------------- */
uint32_t ops_murmur3_32(const void *data, int64_t len, uint32_t seed);
int ops_murmur3_strings(const char *buf, int64_t len, const int64_t *offsets, int64_t n, uint32_t seed,
                        uint32_t *out);
int ops_hash_strings(const char *buf, int64_t len, const int64_t *offsets, int64_t n, uint32_t seed,
                     int64_t num_buckets, int64_t *out);
int ops_hash_ids(const int64_t *ids, int64_t n, uint32_t seed, int64_t num_buckets, int64_t *out);
int ops_xxh64_ids(const int64_t *ids, int64_t n, uint64_t seed, int64_t num_buckets, uint64_t *raw,
                  int64_t *out);
/* UCS-4 (numpy 'U' dtype, native order) -> UTF-8 + offsets; trailing NULs of each item dropped.
 * ops_ucs4_utf8_size returns the byte size, or -1 with *err_index = item holding a bad code point. */
int64_t ops_ucs4_utf8_size(const uint32_t *src, int64_t n, int64_t width, int64_t *err_index);
int ops_ucs4_to_utf8(const uint32_t *src, int64_t n, int64_t width, char *dst, int64_t cap,
                     int64_t *offsets);

/* ---- vocabulary ------------------------------------------------------------------------- */
typedef struct ops_vocab ops_vocab;
/* Builds a table mapping string i to ids[i]; NULL with *status set on error. */
ops_vocab *ops_vocab_new(const char *buf, int64_t len, const int64_t *offsets, int64_t n, const int64_t *ids,
                         int *status, int64_t *err_index);
void ops_vocab_free(ops_vocab *v);
int64_t ops_vocab_size(const ops_vocab *v);
int ops_vocab_lookup(const ops_vocab *v, const char *buf, int64_t len, const int64_t *offsets, int64_t n,
                     int64_t oov_id, int64_t *out);

/* ---- bucketize / elementwise ---------------------------------------------------------- */
int ops_bucketize_f64(const double *x, int64_t n, const double *b, int64_t m, int64_t *out,
                      int64_t *err_index);
int ops_bucketize_f32(const float *x, int64_t n, const double *b, int64_t m, int64_t *out, int64_t *err_index);

/* kind 0: minmax, p = lo, q = hi; kind 1: zscore, p = mean, q = std. A NULL p/q uses the scalar
 * ps/qs for every column, else p/q hold d per-column values. x and out are (n, d). */
int ops_affine_f64(const double *x, int64_t n, int64_t d, int kind, const double *p, double ps, const double *q,
                   double qs, double *out);
int ops_affine_f32(const float *x, int64_t n, int64_t d, int kind, const double *p, double ps, const double *q,
                   double qs, float *out);
int ops_clip_f64(const double *x, int64_t n, int64_t d, const double *lo, double los, const double *hi, double his,
                 double *out, int64_t *err_index);
int ops_clip_f32(const float *x, int64_t n, int64_t d, const double *lo, double los, const double *hi, double his,
                 float *out, int64_t *err_index);
int ops_log1p_f64(const double *x, int64_t n, double *out);
int ops_log1p_f32(const float *x, int64_t n, float *out);

/* ---- encodings -------------------------------------------------------------------------- */
/* out is (n, depth), zero-filled by the caller; ids outside [0, depth) leave their row zero. */
int ops_one_hot_i64(const int64_t *ids, int64_t n, int64_t depth, float *out);
int ops_one_hot_i32(const int32_t *ids, int64_t n, int64_t depth, float *out);
int ops_multi_hot(const int64_t *offsets, int64_t n, const int64_t *ids, int64_t n_ids, int64_t depth, float *out,
                  int64_t *err_index);

/* ---- event windows ---------------------------------------------------------------------- */
/* out is (w, 6): count, sum, mean, min, max, last over events with now - windows[j] < t <= now. */
int ops_window_agg(const int64_t *ts, const double *values, int64_t n, int64_t now, const int64_t *windows,
                   int64_t w, double *out, int64_t *err_index);
/* out is (num_groups, w, 6). */
int ops_window_agg_grouped(const int64_t *keys, const int64_t *ts, const double *values, int64_t n, int64_t now,
                           const int64_t *windows, int64_t w, int64_t num_groups, double *out,
                           int64_t *err_index);
/* keys == NULL: out[0] = total; else out has num_groups entries. weights may be NULL (all 1). */
int ops_decayed_count(const int64_t *ts, const double *weights, const int64_t *keys, int64_t n, int64_t now,
                      double half_life, int64_t num_groups, double *out, int64_t *err_index);

/* ---- ranking / images / text ------------------------------------------------------------ */
int ops_top_k_f64(const double *x, int64_t n, int64_t k, int64_t *idx, double *vals);
int ops_top_k_f32(const float *x, int64_t n, int64_t k, int64_t *idx, float *vals);

/* img is (h, w, c) uint8, out is (c, out_h, out_w) float32; mean/std have c entries. */
int ops_image_preprocess(const uint8_t *img, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                         const double *mean, const double *std, float *out);

/* ids is (n, max_tokens), lengths is (n,). ngrams holds n_ngrams word-n-gram sizes (1..64). */
int ops_tokenize(const char *buf, int64_t len, const int64_t *offsets, int64_t n, const int32_t *ngrams,
                 int64_t n_ngrams, int64_t max_tokens, uint32_t seed, int64_t num_buckets, int64_t pad,
                 int64_t *ids, int64_t *lengths);

#endif /* EDGEVM_OPS_H */
