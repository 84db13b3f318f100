/* edgevm native feature operators — see ops.h for the contract and docs/native-ops.md for the maths. */
#include "ops.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Hot loops are compiled three times on x86-64 Linux/glibc (baseline, AVX2, AVX-512) and picked at
 * load time (ifunc); everywhere else (ARM phones, clang, musl) they are compiled once for the
 * target. Define OPS_NO_MULTIVERSION to turn it off. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) && !defined(OPS_NO_MULTIVERSION)
#define OPS_MV __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define OPS_MV
#endif

#define OPS_INLINE static inline __attribute__((always_inline))

static inline uint64_t as_u64(double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}
static inline double as_f64(uint64_t u) {
    double x;
    memcpy(&x, &u, 8);
    return x;
}
static inline uint32_t as_u32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static bool too_big(int64_t a, int64_t b) { /* a * b > OPS_MAX_ELEMENTS (a, b >= 0) */
    if (a < 0 || b < 0) return true;
    if (a == 0 || b == 0) return false;
    return a > OPS_MAX_ELEMENTS / b;
}

/* ======================================================================================= */
/* MurmurHash3 x86_32 (Austin Appleby, public domain), little-endian block reads on any host. */

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint32_t load32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}
static inline uint32_t mm3_mix(uint32_t k1) {
    k1 *= 0xcc9e2d51u;
    k1 = rotl32(k1, 15);
    k1 *= 0x1b873593u;
    return k1;
}

static inline uint32_t mm3(const unsigned char *data, int64_t len, uint32_t seed) {
    uint32_t h1 = seed;
    int64_t nblocks = len / 4;
    for (int64_t i = 0; i < nblocks; i++) {
        h1 ^= mm3_mix(load32le(data + 4 * i));
        h1 = rotl32(h1, 13);
        h1 = h1 * 5 + 0xe6546b64u;
    }
    const unsigned char *tail = data + 4 * nblocks;
    uint32_t k1 = 0;
    switch (len & 3) {
    case 3:
        k1 ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2:
        k1 ^= (uint32_t)tail[1] << 8; /* fall through */
    case 1:
        k1 ^= tail[0];
        h1 ^= mm3_mix(k1);
    }
    h1 ^= (uint32_t)len;
    return fmix32(h1);
}

uint32_t ops_murmur3_32(const void *data, int64_t len, uint32_t seed) {
    if (!data || len < 0) return 0;
    return mm3((const unsigned char *)data, len, seed);
}

/* x % d for 0 <= x < 2^32 without a division per element (Lemire's fastmod) where available. */
typedef struct {
    uint64_t d, mask, m;
    int mode; /* 0: x < d always, 1: power of two, 2: fastmod, 3: plain % */
} modulus;

static modulus modulus_make(uint64_t d, bool x_is_u32) {
    modulus r = {d, 0, 0, 3};
    if (x_is_u32 && d >= ((uint64_t)1 << 32)) {
        r.mode = 0;
    } else if ((d & (d - 1)) == 0) {
        r.mode = 1;
        r.mask = d - 1;
    }
#ifdef __SIZEOF_INT128__
    else if (x_is_u32) {
        r.mode = 2;
        r.m = UINT64_MAX / d + 1;
    }
#endif
    return r;
}

static inline uint64_t modulus_apply(const modulus *r, uint64_t x) {
    switch (r->mode) {
    case 0:
        return x;
    case 1:
        return x & r->mask;
#ifdef __SIZEOF_INT128__
    case 2: {
        uint64_t low = r->m * x;
        return (uint64_t)(((unsigned __int128)low * r->d) >> 64);
    }
#endif
    default:
        return x % r->d;
    }
}

/* ---- iterating over a string batch ---------------------------------------------------- */
typedef struct {
    const unsigned char *buf;
    int64_t len;
    const int64_t *off;
    int64_t n, i, pos;
} strs;

static void strs_init(strs *s, const char *buf, int64_t len, const int64_t *off, int64_t n) {
    s->buf = (const unsigned char *)buf;
    s->len = buf ? len : 0;
    s->off = off;
    s->n = n;
    s->i = 0;
    s->pos = 0;
}

/* Next string into (*p, *l); returns OPS_OK or an error. Precondition: s->i < s->n. */
static inline int strs_next(strs *s, const unsigned char **p, int64_t *l) {
    if (s->off) {
        int64_t a = s->off[s->i], b = s->off[s->i + 1];
        if (a < 0 || b < a || b > s->len) return OPS_EOFFSETS;
        *p = s->buf + a;
        *l = b - a;
    } else {
        const unsigned char *start = s->buf + s->pos;
        int64_t rem = s->len - s->pos;
        const unsigned char *z = rem > 0 ? memchr(start, 0, (size_t)rem) : NULL;
        if (s->i == s->n - 1) {
            if (z) return OPS_ESEPARATOR;
            *l = rem;
            s->pos = s->len;
        } else {
            if (!z) return OPS_ESEPARATOR;
            *l = z - start;
            s->pos += *l + 1;
        }
        *p = start;
    }
    s->i++;
    return OPS_OK;
}

static int strs_check(const char *buf, int64_t len, const int64_t *off, int64_t n) {
    if (n < 0 || len < 0 || (len > 0 && !buf)) return OPS_EINVAL;
    if (n > OPS_MAX_ELEMENTS) return OPS_ETOOBIG;
    (void)off;
    return OPS_OK;
}

int ops_murmur3_strings(const char *buf, int64_t len, const int64_t *offsets, int64_t n, uint32_t seed,
                        uint32_t *out) {
    int rc = strs_check(buf, len, offsets, n);
    if (rc) return rc;
    strs s;
    strs_init(&s, buf, len, offsets, n);
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p;
        int64_t l;
        if ((rc = strs_next(&s, &p, &l))) return rc;
        out[i] = mm3(p, l, seed);
    }
    return OPS_OK;
}

int ops_hash_strings(const char *buf, int64_t len, const int64_t *offsets, int64_t n, uint32_t seed,
                     int64_t num_buckets, int64_t *out) {
    int rc = strs_check(buf, len, offsets, n);
    if (rc) return rc;
    if (num_buckets < 1) return OPS_EINVAL;
    modulus md = modulus_make((uint64_t)num_buckets, true);
    strs s;
    strs_init(&s, buf, len, offsets, n);
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p;
        int64_t l;
        if ((rc = strs_next(&s, &p, &l))) return rc;
        out[i] = (int64_t)modulus_apply(&md, mm3(p, l, seed));
    }
    return OPS_OK;
}

/* MurmurHash3 x86_32 of the 8 little-endian bytes of v: two blocks, no tail. */
static inline uint32_t mm3_u64(uint64_t v, uint32_t seed) {
    uint32_t h1 = seed;
    h1 ^= mm3_mix((uint32_t)v);
    h1 = rotl32(h1, 13);
    h1 = h1 * 5 + 0xe6546b64u;
    h1 ^= mm3_mix((uint32_t)(v >> 32));
    h1 = rotl32(h1, 13);
    h1 = h1 * 5 + 0xe6546b64u;
    h1 ^= 8u;
    return fmix32(h1);
}

OPS_MV static void mm3_u64_block(const int64_t *ids, int64_t n, uint32_t seed, uint32_t *h) {
    for (int64_t i = 0; i < n; i++) h[i] = mm3_u64((uint64_t)ids[i], seed);
}

int ops_hash_ids(const int64_t *ids, int64_t n, uint32_t seed, int64_t num_buckets, int64_t *out) {
    if (n < 0 || num_buckets < 1) return OPS_EINVAL;
    modulus md = modulus_make((uint64_t)num_buckets, true);
    uint32_t h[512];
    for (int64_t base = 0; base < n; base += 512) {
        int64_t m = n - base < 512 ? n - base : 512;
        mm3_u64_block(ids + base, m, seed, h);
        if (md.mode == 1) {
            for (int64_t i = 0; i < m; i++) out[base + i] = (int64_t)(h[i] & md.mask);
        } else {
            for (int64_t i = 0; i < m; i++) out[base + i] = (int64_t)modulus_apply(&md, h[i]);
        }
    }
    return OPS_OK;
}

/* XXH64 of the 8 little-endian bytes of v (Yann Collet's xxHash, BSD-2). */
#define XP1 0x9E3779B185EBCA87ULL
#define XP2 0xC2B2AE3D27D4EB4FULL
#define XP3 0x165667B19E3779F9ULL
#define XP4 0x85EBCA77C2B2AE63ULL
#define XP5 0x27D4EB2F165667C5ULL
static inline uint64_t xxh64_u64(uint64_t v, uint64_t seed) {
    uint64_t h = seed + XP5 + 8;
    uint64_t k1 = rotl64(v * XP2, 31) * XP1;
    h ^= k1;
    h = rotl64(h, 27) * XP1 + XP4;
    h ^= h >> 33;
    h *= XP2;
    h ^= h >> 29;
    h *= XP3;
    h ^= h >> 32;
    return h;
}

int ops_xxh64_ids(const int64_t *ids, int64_t n, uint64_t seed, int64_t num_buckets, uint64_t *raw,
                  int64_t *out) {
    if (n < 0 || (out && num_buckets < 1)) return OPS_EINVAL;
    modulus md = modulus_make(out ? (uint64_t)num_buckets : 1, false);
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = xxh64_u64((uint64_t)ids[i], seed);
        if (raw) raw[i] = h;
        if (out) out[i] = (int64_t)modulus_apply(&md, h);
    }
    return OPS_OK;
}

/* ---- UCS-4 -> UTF-8 ------------------------------------------------------------------- */
static inline int64_t ucs4_item_len(const uint32_t *p, int64_t width) {
    while (width > 0 && p[width - 1] == 0) width--;
    return width;
}

int64_t ops_ucs4_utf8_size(const uint32_t *src, int64_t n, int64_t width, int64_t *err_index) {
    if (n < 0 || width < 0 || too_big(n, width)) return -1;
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *p = src + i * width;
        int64_t w = ucs4_item_len(p, width);
        for (int64_t j = 0; j < w; j++) {
            uint32_t c = p[j];
            if (c < 0x80)
                total += 1;
            else if (c < 0x800)
                total += 2;
            else if (c < 0x10000) {
                if (c >= 0xD800 && c <= 0xDFFF) goto bad;
                total += 3;
            } else if (c <= 0x10FFFF)
                total += 4;
            else
                goto bad;
            continue;
        bad:
            if (err_index) *err_index = i;
            return -1;
        }
    }
    return total;
}

int ops_ucs4_to_utf8(const uint32_t *src, int64_t n, int64_t width, char *dst, int64_t cap, int64_t *offsets) {
    if (n < 0 || width < 0 || cap < 0 || too_big(n, width)) return OPS_EINVAL;
    unsigned char *o = (unsigned char *)dst;
    int64_t pos = 0;
    offsets[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint32_t *p = src + i * width;
        int64_t w = ucs4_item_len(p, width);
        for (int64_t j = 0; j < w; j++) {
            uint32_t c = p[j];
            if (cap - pos < 4) { /* slow, exact check near the end */
                int64_t need = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
                if (cap - pos < need) return OPS_EINVAL;
            }
            if (c < 0x80) {
                o[pos++] = (unsigned char)c;
            } else if (c < 0x800) {
                o[pos++] = (unsigned char)(0xC0 | (c >> 6));
                o[pos++] = (unsigned char)(0x80 | (c & 0x3F));
            } else if (c < 0x10000) {
                if (c >= 0xD800 && c <= 0xDFFF) return OPS_EUNICODE;
                o[pos++] = (unsigned char)(0xE0 | (c >> 12));
                o[pos++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                o[pos++] = (unsigned char)(0x80 | (c & 0x3F));
            } else if (c <= 0x10FFFF) {
                o[pos++] = (unsigned char)(0xF0 | (c >> 18));
                o[pos++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
                o[pos++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
                o[pos++] = (unsigned char)(0x80 | (c & 0x3F));
            } else {
                return OPS_EUNICODE;
            }
        }
        offsets[i + 1] = pos;
    }
    return OPS_OK;
}

/* ======================================================================================= */
/* Vocabulary: open addressing, linear probing, load factor <= 1/2, keys copied into the table. */

typedef struct {
    int64_t off; /* -1: empty */
    int64_t id;
    uint32_t hash;
    uint32_t len;
} vslot;

struct ops_vocab {
    vslot *slots;
    uint64_t mask;
    int64_t n;
    unsigned char *keys;
};

#define VOCAB_SEED 0x9747b28cu

void ops_vocab_free(ops_vocab *v) {
    if (!v) return;
    free(v->slots);
    free(v->keys);
    free(v);
}

int64_t ops_vocab_size(const ops_vocab *v) { return v ? v->n : 0; }

ops_vocab *ops_vocab_new(const char *buf, int64_t len, const int64_t *offsets, int64_t n, const int64_t *ids,
                         int *status, int64_t *err_index) {
    int dummy;
    if (!status) status = &dummy;
    *status = strs_check(buf, len, offsets, n);
    if (*status) return NULL;
    if (!offsets && n > 0) {
        /* Count the separators first: a string holding a NUL splits into more pieces, and two of
         * those (say, two empty ones) would be reported as a duplicate before the count is off. */
        int64_t seps = 0;
        if (len > 0)
            for (const char *p = buf, *end = buf + len; (p = memchr(p, 0, (size_t)(end - p))) != NULL; p++) seps++;
        if (seps != n - 1) {
            *status = OPS_ESEPARATOR;
            return NULL;
        }
    }
    uint64_t cap = 8;
    while (cap < (uint64_t)n * 2) cap <<= 1;
    ops_vocab *v = calloc(1, sizeof *v);
    if (!v) goto nomem;
    v->slots = malloc(cap * sizeof(vslot));
    v->keys = malloc(len > 0 ? (size_t)len : 1);
    if (!v->slots || !v->keys) goto nomem;
    if (len > 0) memcpy(v->keys, buf, (size_t)len);
    for (uint64_t i = 0; i < cap; i++) v->slots[i].off = -1;
    v->mask = cap - 1;
    strs s;
    strs_init(&s, (const char *)v->keys, len, offsets, n);
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p;
        int64_t l;
        int rc = strs_next(&s, &p, &l);
        if (rc || l > (int64_t)UINT32_MAX) {
            *status = rc ? rc : OPS_ETOOBIG;
            if (err_index) *err_index = i;
            ops_vocab_free(v);
            return NULL;
        }
        uint32_t h = mm3(p, l, VOCAB_SEED);
        uint64_t j = h & v->mask;
        while (v->slots[j].off >= 0) {
            vslot *e = &v->slots[j];
            if (e->hash == h && e->len == (uint32_t)l && memcmp(v->keys + e->off, p, (size_t)l) == 0) {
                *status = OPS_EDUPLICATE;
                if (err_index) *err_index = i;
                ops_vocab_free(v);
                return NULL;
            }
            j = (j + 1) & v->mask;
        }
        v->slots[j].off = p - v->keys;
        v->slots[j].id = ids[i];
        v->slots[j].hash = h;
        v->slots[j].len = (uint32_t)l;
    }
    v->n = n;
    *status = OPS_OK;
    return v;
nomem:
    ops_vocab_free(v);
    *status = OPS_ENOMEM;
    return NULL;
}

int ops_vocab_lookup(const ops_vocab *v, const char *buf, int64_t len, const int64_t *offsets, int64_t n,
                     int64_t oov_id, int64_t *out) {
    if (!v) return OPS_EINVAL;
    int rc = strs_check(buf, len, offsets, n);
    if (rc) return rc;
    strs s;
    strs_init(&s, buf, len, offsets, n);
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p;
        int64_t l;
        if ((rc = strs_next(&s, &p, &l))) return rc;
        uint32_t h = mm3(p, l, VOCAB_SEED);
        uint64_t j = h & v->mask;
        int64_t id = oov_id;
        for (;;) {
            const vslot *e = &v->slots[j];
            if (e->off < 0) break;
            if (e->hash == h && (int64_t)e->len == l && memcmp(v->keys + e->off, p, (size_t)l) == 0) {
                id = e->id;
                break;
            }
            j = (j + 1) & v->mask;
        }
        out[i] = id;
    }
    return OPS_OK;
}

/* ======================================================================================= */
/* bucketize: out[i] = #{ j : b[j] <= x[i] } (np.searchsorted side='right'); NaN -> m. */

static int check_boundaries(const double *b, int64_t m, int64_t *err_index) {
    if (m < 0) return OPS_EINVAL;
    if (m == 1 && isnan(b[0])) {
        if (err_index) *err_index = 0;
        return OPS_EBOUNDARIES;
    }
    for (int64_t i = 0; i + 1 < m; i++) {
        if (!(b[i] < b[i + 1])) {
            if (err_index) *err_index = isnan(b[i]) ? i : i + 1;
            return OPS_EBOUNDARIES;
        }
    }
    return OPS_OK;
}

#define BUCKETIZE_BODY(T)                                                                           \
    int64_t i = 0;                                                                                  \
    if (m == 0) {                                                                                   \
        for (i = 0; i < n; i++) out[i] = 0;                                                         \
        return OPS_OK;                                                                              \
    }                                                                                               \
    for (; i + 8 <= n; i += 8) { /* 8 searches in lockstep: the loads overlap */                   \
        double v[8];                                                                                \
        int64_t pos[8];                                                                             \
        for (int k = 0; k < 8; k++) {                                                               \
            v[k] = (double)x[i + k];                                                                \
            pos[k] = 0;                                                                             \
        }                                                                                           \
        int64_t len = m;                                                                            \
        while (len > 1) {                                                                           \
            int64_t half = len >> 1;                                                                \
            for (int k = 0; k < 8; k++) pos[k] += (b[pos[k] + half] <= v[k]) ? half : 0;           \
            len -= half;                                                                            \
        }                                                                                           \
        for (int k = 0; k < 8; k++) {                                                               \
            int64_t r = pos[k] + (b[pos[k]] <= v[k]);                                               \
            out[i + k] = v[k] != v[k] ? m : r;                                                      \
        }                                                                                           \
    }                                                                                               \
    for (; i < n; i++) {                                                                            \
        double v = (double)x[i];                                                                    \
        int64_t pos = 0, len = m;                                                                   \
        while (len > 1) {                                                                           \
            int64_t half = len >> 1;                                                                \
            pos += (b[pos + half] <= v) ? half : 0;                                                 \
            len -= half;                                                                            \
        }                                                                                           \
        out[i] = v != v ? m : pos + (b[pos] <= v);                                                  \
    }                                                                                               \
    return OPS_OK;

int ops_bucketize_f64(const double *x, int64_t n, const double *b, int64_t m, int64_t *out,
                      int64_t *err_index) {
    if (n < 0) return OPS_EINVAL;
    int rc = check_boundaries(b, m, err_index);
    if (rc) return rc;
    BUCKETIZE_BODY(double)
}

int ops_bucketize_f32(const float *x, int64_t n, const double *b, int64_t m, int64_t *out, int64_t *err_index) {
    if (n < 0) return OPS_EINVAL;
    int rc = check_boundaries(b, m, err_index);
    if (rc) return rc;
    BUCKETIZE_BODY(float)
}

/* ======================================================================================= */
/* Elementwise. Per-column parameters are tiled to a multiple of d that is at least 64 long, so the
 * inner loop runs over a flat stretch of the (n, d) array and vectorises whatever d is. */

#define TILE_MIN 64

static int64_t tile_len(int64_t d) { return d >= TILE_MIN ? d : d * ((TILE_MIN + d - 1) / d); }

/* out = (x - a) * s, computed in double. */
#define AFFINE_LOOP(TI, TO)                                                                         \
    OPS_MV static void affine_scalar_##TI(const TI *restrict x, int64_t cnt, double a, double s,   \
                                         TO *restrict out) {                                     \
        for (int64_t i = 0; i < cnt; i++) out[i] = (TO)(((double)x[i] - a) * s);                   \
    }                                                                                               \
    OPS_MV static void affine_tiled_##TI(const TI *restrict x, int64_t cnt, const double *restrict a, \
                                        const double *restrict s, int64_t L, TO *restrict out) {  \
        for (int64_t base = 0; base < cnt; base += L) {                                             \
            int64_t m = cnt - base < L ? cnt - base : L;                                            \
            const TI *restrict xb = x + base;                                                       \
            TO *restrict ob = out + base;                                                           \
            for (int64_t t = 0; t < m; t++) ob[t] = (TO)(((double)xb[t] - a[t]) * s[t]);             \
        }                                                                                           \
    }
AFFINE_LOOP(double, double)
AFFINE_LOOP(float, float)

/* Columns that the multiply-by-reciprocal loop cannot do: mode 1 (denominator 0): output 0, NaN
 * stays NaN; mode 2 (subnormal denominator, whose reciprocal overflows): a real division. */
#define AFFINE_FIX(TI, TO)                                                                          \
    static void affine_fix_##TI(const TI *x, int64_t n, int64_t d, const unsigned char *mode,      \
                                const double *a, const double *den, TO *out) {                     \
        for (int64_t i = 0; i < n; i++)                                                             \
            for (int64_t j = 0; j < d; j++) {                                                       \
                TI v = x[i * d + j];                                                                \
                if (mode[j] == 1) out[i * d + j] = v != v ? (TO)v : (TO)0;                          \
                if (mode[j] == 2) out[i * d + j] = (TO)(((double)v - a[j]) / den[j]);               \
            }                                                                                       \
    }
AFFINE_FIX(double, double)
AFFINE_FIX(float, float)

static inline unsigned char affine_params(int kind, double p, double q, double *a, double *s, double *den) {
    *den = kind == 0 ? q - p : q; /* minmax: hi - lo; zscore: std */
    *a = p;
    if (*den == 0.0) {
        *s = 0.0;
        return 1;
    }
    *s = 1.0 / *den;
    if (isinf(*s)) {
        *s = 0.0;
        return 2;
    }
    return 0;
}

#define AFFINE_BODY(TI, TO)                                                                         \
    if (n < 0 || d < 1 || too_big(n, d) || (kind != 0 && kind != 1)) return OPS_EINVAL;             \
    int64_t cnt = n * d;                                                                            \
    if (!p && !q) {                                                                                 \
        double a, s, den;                                                                           \
        unsigned char mode = affine_params(kind, ps, qs, &a, &s, &den);                             \
        if (mode == 0)                                                                              \
            affine_scalar_##TI(x, cnt, a, s, out);                                                  \
        else                                                                                        \
            affine_fix_##TI(x, cnt, 1, &mode, &a, &den, out);                                       \
        return OPS_OK;                                                                              \
    }                                                                                               \
    int64_t L = tile_len(d);                                                                        \
    double *a = malloc(sizeof(double) * (size_t)(2 * L + d));                                       \
    unsigned char *mode = malloc((size_t)d);                                                        \
    if (!a || !mode) {                                                                              \
        free(a);                                                                                    \
        free(mode);                                                                                 \
        return OPS_ENOMEM;                                                                          \
    }                                                                                               \
    double *s = a + L, *den = a + 2 * L;                                                            \
    bool special = false;                                                                           \
    for (int64_t j = 0; j < d; j++) {                                                               \
        mode[j] = affine_params(kind, p ? p[j] : ps, q ? q[j] : qs, &a[j], &s[j], &den[j]);         \
        special |= mode[j] != 0;                                                                    \
    }                                                                                               \
    for (int64_t t = d; t < L; t++) {                                                               \
        a[t] = a[t - d];                                                                            \
        s[t] = s[t - d];                                                                            \
    }                                                                                               \
    affine_tiled_##TI(x, cnt, a, s, L, out);                                                        \
    if (special) affine_fix_##TI(x, n, d, mode, a, den, out);                                       \
    free(a);                                                                                        \
    free(mode);                                                                                     \
    return OPS_OK;

int ops_affine_f64(const double *x, int64_t n, int64_t d, int kind, const double *p, double ps, const double *q,
                   double qs, double *out) {
    AFFINE_BODY(double, double)
}

int ops_affine_f32(const float *x, int64_t n, int64_t d, int kind, const double *p, double ps, const double *q,
                   double qs, float *out) {
    AFFINE_BODY(float, float)
}

/* clip: NaN propagates; float32 data is compared with the bounds rounded to float32 (as numpy). */
#define CLIP_LOOPS(T)                                                                               \
    OPS_MV static void clip_scalar_##T(const T *restrict x, int64_t cnt, T lo, T hi, T *restrict out) { \
        for (int64_t i = 0; i < cnt; i++) {                                                         \
            T v = x[i];                                                                             \
            v = v < lo ? lo : v;                                                                    \
            out[i] = v > hi ? hi : v;                                                               \
        }                                                                                           \
    }                                                                                               \
    OPS_MV static void clip_tiled_##T(const T *restrict x, int64_t cnt, const T *restrict lo,       \
                                     const T *restrict hi, int64_t L, T *restrict out) {          \
        for (int64_t base = 0; base < cnt; base += L) {                                             \
            int64_t m = cnt - base < L ? cnt - base : L;                                            \
            const T *restrict xb = x + base;                                                        \
            T *restrict ob = out + base;                                                            \
            for (int64_t t = 0; t < m; t++) {                                                       \
                T v = xb[t];                                                                        \
                v = v < lo[t] ? lo[t] : v;                                                          \
                ob[t] = v > hi[t] ? hi[t] : v;                                                      \
            }                                                                                       \
        }                                                                                           \
    }
CLIP_LOOPS(double)
CLIP_LOOPS(float)

#define CLIP_BODY(T)                                                                                \
    if (n < 0 || d < 1 || too_big(n, d)) return OPS_EINVAL;                                        \
    int64_t cnt = n * d;                                                                            \
    for (int64_t j = 0; j < (lo || hi ? d : 1); j++) {                                              \
        double l = lo ? lo[j] : los, h = hi ? hi[j] : his;                                          \
        if (!(l <= h)) { /* also rejects NaN bounds */                                              \
            if (err_index) *err_index = j;                                                          \
            return OPS_EINVAL;                                                                      \
        }                                                                                           \
    }                                                                                               \
    if (!lo && !hi) {                                                                               \
        clip_scalar_##T(x, cnt, (T)los, (T)his, out);                                               \
        return OPS_OK;                                                                              \
    }                                                                                               \
    int64_t L = tile_len(d);                                                                        \
    T *tl = malloc(sizeof(T) * (size_t)(2 * L));                                                    \
    if (!tl) return OPS_ENOMEM;                                                                     \
    T *th = tl + L;                                                                                 \
    for (int64_t t = 0; t < L; t++) {                                                               \
        tl[t] = (T)(lo ? lo[t % d] : los);                                                          \
        th[t] = (T)(hi ? hi[t % d] : his);                                                          \
    }                                                                                               \
    clip_tiled_##T(x, cnt, tl, th, L, out);                                                         \
    free(tl);                                                                                       \
    return OPS_OK;

int ops_clip_f64(const double *x, int64_t n, int64_t d, const double *lo, double los, const double *hi, double his,
                 double *out, int64_t *err_index) {
    CLIP_BODY(double)
}

int ops_clip_f32(const float *x, int64_t n, int64_t d, const double *lo, double los, const double *hi, double his,
                 float *out, int64_t *err_index) {
    CLIP_BODY(float)
}

/* log1p, branch-free so that it vectorises. fdlibm's reduction: u = 1 + x = 2^k * m with
 * sqrt(1/2) <= m < sqrt(2), f = m - 1, log(m) = f - f^2/2 + s*(f^2/2 + R(s^2)) with s = f/(2+f) and
 * R fdlibm's minimax fit of the atanh series (Lg1..Lg7), plus c/u where c is the rounding error of
 * 1 + x; 1/u for that tiny correction comes from a bit trick instead of a second division.
 * The kernels do not handle x <= -1, inf, NaN or -0.0: a cheap vectorised check per block sends
 * those blocks through the scalar fix-up (which matches numpy: -1 -> -inf, < -1 -> NaN). The
 * float32 kernel runs the same scheme in float32 arithmetic (e_logf.c coefficients). */
#define LN2_HI 6.93147180369123816490e-01
#define LN2_LO 1.90821492927058770002e-10
#define LN2_HI_F 6.9313812256e-01f /* 0x3f317180 */
#define LN2_LO_F 9.0580006145e-06f /* 0x3717f7d1 */
#define LOG1P_BLOCK 256

OPS_INLINE double log1p_kernel(double x) {
    double u = 1.0 + x;
    uint64_t iu = as_u64(u);
    uint64_t tmp = iu - 0x3fe6a09e667f3bcdULL;
    int64_t k = (int64_t)tmp >> 52;
    double m = as_f64(iu - (tmp & 0xfff0000000000000ULL));
    double kd = (double)k;
    /* k == 0: m == u, and the exact f is x itself. Otherwise f = m - 1 is exact and c/u adds the
     * rounding error c of 1 + x; c/u is below an ulp of the result, so 1/u to 5% (the bit trick)
     * is plenty. */
    double f = k == 0 ? x : m - 1.0;
    double c = u >= 2.0 ? 1.0 - (u - x) : x - (u - 1.0);
    uint64_t iuc = iu < 0x7e37e43c8800759cULL ? iu : 0x7e37e43c8800759cULL; /* u <= 1e300 */
    c = k == 0 ? 0.0 : c * as_f64(0x7fde623822fc16e6ULL - iuc);
    double s = f / (2.0 + f);
    double z = s * s;
    double R = 1.479819860511658591e-01;
    R = R * z + 1.531383769920937332e-01;
    R = R * z + 1.818357216161805012e-01;
    R = R * z + 2.222219843214978396e-01;
    R = R * z + 2.857142874366239149e-01;
    R = R * z + 3.999999999940941908e-01;
    R = R * z + 6.666666666666735130e-01;
    R *= z;
    double hfsq = 0.5 * f * f;
    return kd * LN2_HI - ((hfsq - (s * (hfsq + R) + (kd * LN2_LO + c))) - f);
}

OPS_INLINE float log1p_kernel_f32(float x) {
    float u = 1.0f + x;
    uint32_t iu = as_u32(u);
    uint32_t tmp = iu - 0x3f3504f3u;
    int32_t k = (int32_t)tmp >> 23;
    uint32_t im = iu - (tmp & 0xff800000u);
    float m;
    memcpy(&m, &im, 4);
    float kf = (float)k;
    float f = k == 0 ? x : m - 1.0f;
    float c = u >= 2.0f ? 1.0f - (u - x) : x - (u - 1.0f);
    uint32_t iuc = (iu < 0x7cf0bdc2u ? iu : 0x7cf0bdc2u); /* u <= 1e37 */
    uint32_t rb = 0x7ef311c3u - iuc;
    float r;
    memcpy(&r, &rb, 4);
    c = k == 0 ? 0.0f : c * r;
    float s = f / (2.0f + f);
    float z = s * s;
    float R = 0.24279078841f;
    R = R * z + 0.28498786688f;
    R = R * z + 0.40000972152f;
    R = R * z + 0.66666662693f;
    R *= z;
    float hfsq = 0.5f * f * f;
    return kf * LN2_HI_F - ((hfsq - (s * (hfsq + R) + (kf * LN2_LO_F + c))) - f);
}

#define LOG1P_LOOPS(T, SUF, KERNEL, NEG_ZERO_BITS, BITS_T)                                          \
    OPS_MV static int log1p_block_##SUF(const T *restrict x, int64_t n, T *restrict out) {          \
        int special = 0;                                                                            \
        for (int64_t i = 0; i < n; i++) {                                                           \
            T v = x[i];                                                                             \
            BITS_T b;                                                                               \
            memcpy(&b, &v, sizeof b);                                                               \
            out[i] = KERNEL(v);                                                                     \
            special |= !(v > (T)-1) | (v == (T)INFINITY) | (b == NEG_ZERO_BITS);                    \
        }                                                                                           \
        return special;                                                                             \
    }
LOG1P_LOOPS(double, f64, log1p_kernel, 0x8000000000000000ULL, uint64_t)
LOG1P_LOOPS(float, f32, log1p_kernel_f32, 0x80000000u, uint32_t)

#define LOG1P_BODY(T, SUF)                                                                          \
    if (n < 0) return OPS_EINVAL;                                                                   \
    for (int64_t base = 0; base < n; base += LOG1P_BLOCK) {                                         \
        int64_t m = n - base < LOG1P_BLOCK ? n - base : LOG1P_BLOCK;                                \
        if (!log1p_block_##SUF(x + base, m, out + base)) continue;                                  \
        for (int64_t i = base; i < base + m; i++) {                                                 \
            T v = x[i];                                                                             \
            if (v != v || v == (T)INFINITY || v == 0)                                               \
                out[i] = v; /* NaN, inf, +-0 */                                                     \
            else if (v == (T)-1)                                                                    \
                out[i] = (T)-INFINITY;                                                              \
            else if (v < (T)-1)                                                                     \
                out[i] = (T)NAN;                                                                    \
        }                                                                                           \
    }                                                                                               \
    return OPS_OK;

int ops_log1p_f64(const double *x, int64_t n, double *out) { LOG1P_BODY(double, f64) }
int ops_log1p_f32(const float *x, int64_t n, float *out) { LOG1P_BODY(float, f32) }

/* ======================================================================================= */
/* one-hot / multi-hot (the caller zero-fills out). */

int ops_one_hot_i64(const int64_t *ids, int64_t n, int64_t depth, float *out) {
    if (n < 0 || depth < 0 || too_big(n, depth)) return OPS_EINVAL;
    for (int64_t i = 0; i < n; i++) {
        uint64_t id = (uint64_t)ids[i];
        if (id < (uint64_t)depth) out[i * depth + (int64_t)id] = 1.0f;
    }
    return OPS_OK;
}

int ops_one_hot_i32(const int32_t *ids, int64_t n, int64_t depth, float *out) {
    if (n < 0 || depth < 0 || too_big(n, depth)) return OPS_EINVAL;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        if (id >= 0 && id < depth) out[i * depth + id] = 1.0f;
    }
    return OPS_OK;
}

int ops_multi_hot(const int64_t *offsets, int64_t n, const int64_t *ids, int64_t n_ids, int64_t depth, float *out,
                  int64_t *err_index) {
    if (n < 0 || n_ids < 0 || depth < 0 || too_big(n, depth)) return OPS_EINVAL;
    /* Validate first so that a bad array leaves no partial output behind. */
    for (int64_t i = 0; i <= n; i++) {
        int64_t o = offsets[i];
        if (o < 0 || o > n_ids || (i > 0 && o < offsets[i - 1])) {
            if (err_index) *err_index = i;
            return OPS_EOFFSETS;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t a = offsets[i], b = offsets[i + 1];
        if (a < 0 || b < a || b > n_ids) return OPS_EOFFSETS; /* changed under us: still safe */
        float *row = out + i * depth;
        for (int64_t j = a; j < b; j++) {
            uint64_t id = (uint64_t)ids[j];
            if (id < (uint64_t)depth) row[id] = 1.0f;
        }
    }
    return OPS_OK;
}

/* ======================================================================================= */
/* Event windows. Events are sorted by time; event i is in window j iff t_i <= now and
 * age_i = now - t_i < windows[j] (computed in uint64, so no overflow). Windows sorted by length
 * cut the tail of the event array into nested suffixes; each event is visited once, in the "band"
 * between two consecutive window lengths, and band statistics are combined afterwards. */

typedef struct {
    double count, sum, min, max;
    int nan;
} band_t;

static inline void band_init(band_t *b) {
    b->count = 0;
    b->sum = 0;
    b->min = INFINITY;
    b->max = -INFINITY;
    b->nan = 0;
}

/* GCC vector extensions (lowered to whatever the target has) for the min/max reductions, which the
 * auto-vectoriser will not do under IEEE rules. NaN never wins these selects, so min/max skip NaN;
 * a NaN in the band shows up in the sum, and only then is the band re-scanned for one. */
typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4l __attribute__((vector_size(32)));
#define V4_SELECT(m, a, b) ((v4d)(((v4l)(a) & (m)) | ((v4l)(b) & ~(m))))

OPS_MV static void band_stats(const double *restrict v, int64_t a, int64_t e, band_t *b) {
    v4d s0 = {0, 0, 0, 0}, s1 = s0;
    v4d mn0 = {INFINITY, INFINITY, INFINITY, INFINITY}, mn1 = mn0;
    v4d mx0 = -mn0, mx1 = -mn0;
    int64_t i = a;
    for (; i + 8 <= e; i += 8) {
        v4d x0, x1;
        memcpy(&x0, v + i, sizeof x0);
        memcpy(&x1, v + i + 4, sizeof x1);
        s0 += x0;
        s1 += x1;
        mn0 = V4_SELECT(x0 < mn0, x0, mn0);
        mn1 = V4_SELECT(x1 < mn1, x1, mn1);
        mx0 = V4_SELECT(x0 > mx0, x0, mx0);
        mx1 = V4_SELECT(x1 > mx1, x1, mx1);
    }
    double sum = ((s0[0] + s1[0]) + (s0[1] + s1[1])) + ((s0[2] + s1[2]) + (s0[3] + s1[3]));
    double lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < 4; k++) {
        lo = mn0[k] < lo ? mn0[k] : lo;
        lo = mn1[k] < lo ? mn1[k] : lo;
        hi = mx0[k] > hi ? mx0[k] : hi;
        hi = mx1[k] > hi ? mx1[k] : hi;
    }
    for (; i < e; i++) {
        double x = v[i];
        sum += x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    int nan = 0;
    if (sum != sum)
        for (i = a; i < e && !nan; i++) nan = v[i] != v[i];
    b->count = (double)(e - a);
    b->sum = sum;
    b->min = lo;
    b->max = hi;
    b->nan = nan;
}

static inline void band_add(band_t *acc, const band_t *b) {
    acc->count += b->count;
    acc->sum += b->sum;
    acc->min = b->min < acc->min ? b->min : acc->min;
    acc->max = b->max > acc->max ? b->max : acc->max;
    acc->nan |= b->nan;
}

static inline void band_emit(const band_t *b, double last, double *o) {
    o[0] = b->count;
    if (b->count == 0) {
        o[1] = 0.0;
        o[2] = o[3] = o[4] = o[5] = NAN;
        return;
    }
    o[1] = b->sum;
    o[2] = b->sum / b->count;
    o[3] = b->nan ? NAN : b->min;
    o[4] = b->nan ? NAN : b->max;
    o[5] = last;
}

/* Returns n if sorted, else the first i with ts[i] < ts[i-1]. */
OPS_MV static int64_t first_unsorted(const int64_t *ts, int64_t n) {
    int64_t base = 1;
    for (; base < n; base += 4096) { /* vectorised check per block, exact position on failure */
        int64_t e = n - base < 4096 ? n : base + 4096;
        int bad = 0;
        for (int64_t i = base; i < e; i++) bad |= ts[i] < ts[i - 1];
        if (bad)
            for (int64_t i = base; i < e; i++)
                if (ts[i] < ts[i - 1]) return i;
    }
    return n;
}

OPS_MV static int64_t first_bad_key(const int64_t *keys, int64_t n, int64_t g) {
    for (int64_t base = 0; base < n; base += 4096) {
        int64_t e = n - base < 4096 ? n : base + 4096;
        int bad = 0;
        for (int64_t i = base; i < e; i++) bad |= (uint64_t)keys[i] >= (uint64_t)g;
        if (bad)
            for (int64_t i = base; i < e; i++)
                if ((uint64_t)keys[i] >= (uint64_t)g) return i;
    }
    return n;
}

/* First index in [0, n) with ts[i] > now (ts sorted). */
static int64_t upper_index(const int64_t *ts, int64_t n, int64_t now) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (ts[mid] <= now)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* First index in [0, end) whose age (now - ts[i], all ts <= now there) is < w. */
static int64_t window_start(const int64_t *ts, int64_t end, int64_t now, int64_t w) {
    int64_t lo = 0, hi = end;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t age = (uint64_t)now - (uint64_t)ts[mid];
        if (age >= (uint64_t)w)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Window order by ascending length (stable insertion sort; w is small). */
static int64_t *window_order(const int64_t *windows, int64_t w) {
    int64_t *ord = malloc(sizeof(int64_t) * (size_t)(w > 0 ? w : 1));
    if (!ord) return NULL;
    for (int64_t j = 0; j < w; j++) {
        int64_t k = j;
        while (k > 0 && windows[ord[k - 1]] > windows[j]) {
            ord[k] = ord[k - 1];
            k--;
        }
        ord[k] = j;
    }
    return ord;
}

static int check_windows(const int64_t *windows, int64_t w, int64_t *err_index) {
    if (w < 0) return OPS_EINVAL;
    for (int64_t j = 0; j < w; j++)
        if (windows[j] < 0) {
            if (err_index) *err_index = j;
            return OPS_EINVAL;
        }
    return OPS_OK;
}

int ops_window_agg(const int64_t *ts, const double *values, int64_t n, int64_t now, const int64_t *windows,
                   int64_t w, double *out, int64_t *err_index) {
    if (n < 0 || too_big(w, 6)) return OPS_EINVAL;
    int rc = check_windows(windows, w, err_index);
    if (rc) return rc;
    int64_t bad = first_unsorted(ts, n);
    if (bad < n) {
        if (err_index) *err_index = bad;
        return OPS_EUNSORTED;
    }
    int64_t *ord = window_order(windows, w);
    if (!ord) return OPS_ENOMEM;
    int64_t end = upper_index(ts, n, now);
    double last = end > 0 ? values[end - 1] : NAN;
    band_t acc;
    band_init(&acc);
    int64_t prev_start = end;
    for (int64_t r = 0; r < w; r++) {
        int64_t j = ord[r];
        int64_t start = window_start(ts, prev_start, now, windows[j]);
        if (start < prev_start) {
            band_t b;
            band_stats(values, start, prev_start, &b);
            band_add(&acc, &b);
            prev_start = start;
        }
        band_emit(&acc, last, out + 6 * j);
    }
    free(ord);
    return OPS_OK;
}

int ops_window_agg_grouped(const int64_t *keys, const int64_t *ts, const double *values, int64_t n, int64_t now,
                           const int64_t *windows, int64_t w, int64_t num_groups, double *out,
                           int64_t *err_index) {
    if (n < 0 || num_groups < 0 || too_big(num_groups, w) || too_big(num_groups * w, 6)) return OPS_EINVAL;
    int rc = check_windows(windows, w, err_index);
    if (rc) return rc;
    int64_t bad = first_unsorted(ts, n);
    if (bad < n) {
        if (err_index) *err_index = bad;
        return OPS_EUNSORTED;
    }
    bad = first_bad_key(keys, n, num_groups);
    if (bad < n) {
        if (err_index) *err_index = bad;
        return OPS_EKEY;
    }
    int64_t G = num_groups;
    int64_t *ord = window_order(windows, w);
    int64_t *starts = malloc(sizeof(int64_t) * (size_t)(w + 1));
    band_t *acc = malloc(sizeof(band_t) * (size_t)(G * w > 0 ? G * w : 1));
    double *last = malloc(sizeof(double) * (size_t)(G > 0 ? G : 1));
    int64_t *last_band = malloc(sizeof(int64_t) * (size_t)(G > 0 ? G : 1));
    if (!ord || !starts || !acc || !last || !last_band) {
        free(ord);
        free(starts);
        free(acc);
        free(last);
        free(last_band);
        return OPS_ENOMEM;
    }
    for (int64_t i = 0; i < G * w; i++) band_init(&acc[i]);
    for (int64_t g = 0; g < G; g++) {
        last[g] = NAN;
        last_band[g] = w; /* no event in any window */
    }
    /* Band r (r-th shortest window) holds events [starts[r+1], starts[r]); starts[0] = end. */
    int64_t end = upper_index(ts, n, now);
    starts[0] = end;
    for (int64_t r = 0; r < w; r++) starts[r + 1] = window_start(ts, starts[r], now, windows[ord[r]]);
    /* Oldest band first, so that the newest event of each group is written last. */
    for (int64_t r = w - 1; r >= 0; r--) {
        for (int64_t i = starts[r + 1]; i < starts[r]; i++) {
            uint64_t g = (uint64_t)keys[i];
            if (g >= (uint64_t)G) continue; /* re-checked: the array may change under us */
            double x = values[i];
            band_t *b = &acc[(int64_t)g * w + r];
            b->count += 1;
            b->sum += x;
            b->min = x < b->min ? x : b->min;
            b->max = x > b->max ? x : b->max;
            b->nan |= x != x;
            last[g] = x;
            last_band[g] = r;
        }
    }
    for (int64_t g = 0; g < G; g++) {
        band_t run;
        band_init(&run);
        for (int64_t r = 0; r < w; r++) {
            band_add(&run, &acc[g * w + r]);
            band_emit(&run, last[g], out + (g * w + ord[r]) * 6);
        }
    }
    free(ord);
    free(starts);
    free(acc);
    free(last);
    free(last_band);
    return OPS_OK;
}

/* 2^y for y <= 0, branch-free and vectorisable (relative error a few ulp; underflows to 0 below -1075).
 * y = n + f with |f| <= 1/2; 2^f from its Taylor series (degree 13); 2^n applied as two
 * exact power-of-two factors so that subnormal results round once. */
OPS_INLINE double exp2_neg(double y) {
    y = y < -1100.0 ? -1100.0 : y;
    double t = y + 0x1.8p52;
    int64_t n = (int64_t)(as_u64(t) - as_u64(0x1.8p52));
    double f = y - (t - 0x1.8p52);
    double p = 1.3691488853904128e-12; /* ln2^13/13!; the coefficients are ln2^k/k! */
    p = p * f + 2.5678435993488206e-11;
    p = p * f + 4.4455382718708116e-10;
    p = p * f + 7.054911620801123e-09;
    p = p * f + 1.01780860092397e-07;
    p = p * f + 1.321548679014431e-06;
    p = p * f + 1.5252733804059841e-05;
    p = p * f + 0.0001540353039338161;
    p = p * f + 0.0013333558146428443;
    p = p * f + 0.009618129107628477;
    p = p * f + 0.05550410866482158;
    p = p * f + 0.24022650695910072;
    p = p * f + 0.6931471805599453;
    p = p * f + 1.0;
    int64_t n1 = n >> 1, n2 = n - n1;
    double s1 = as_f64((uint64_t)(n1 + 1023) << 52);
    double s2 = as_f64((uint64_t)(n2 + 1023) << 52);
    return p * s1 * s2;
}

OPS_MV static void decay_block(const int64_t *restrict ts, const double *restrict wts, int64_t cnt, int64_t now,
                               double neg_inv_hl, double *restrict out) {
    /* two loops, not `wts ? wts[i] : 1.0`: that becomes a masked load from NULL, which costs a
     * microcode assist per vector on some CPUs */
    if (wts) {
        for (int64_t i = 0; i < cnt; i++) {
            int64_t t = ts[i];
            double e = exp2_neg((double)((uint64_t)now - (uint64_t)t) * neg_inv_hl);
            out[i] = t <= now ? e * wts[i] : 0.0;
        }
    } else {
        for (int64_t i = 0; i < cnt; i++) {
            int64_t t = ts[i];
            double e = exp2_neg((double)((uint64_t)now - (uint64_t)t) * neg_inv_hl);
            out[i] = t <= now ? e : 0.0;
        }
    }
}

int ops_decayed_count(const int64_t *ts, const double *weights, const int64_t *keys, int64_t n, int64_t now,
                      double half_life, int64_t num_groups, double *out, int64_t *err_index) {
    if (n < 0 || !(half_life > 0) || isinf(half_life)) return OPS_EINVAL;
    if (keys) {
        if (num_groups < 0 || num_groups > OPS_MAX_ELEMENTS) return OPS_EINVAL;
        int64_t bad = first_bad_key(keys, n, num_groups);
        if (bad < n) {
            if (err_index) *err_index = bad;
            return OPS_EKEY;
        }
        for (int64_t g = 0; g < num_groups; g++) out[g] = 0.0;
    }
    double neg_inv_hl = -1.0 / half_life;
    double buf[512];
    double acc[8] = {0};
    for (int64_t base = 0; base < n; base += 512) {
        int64_t m = n - base < 512 ? n - base : 512;
        decay_block(ts + base, weights ? weights + base : NULL, m, now, neg_inv_hl, buf);
        if (keys) {
            for (int64_t i = 0; i < m; i++) {
                uint64_t g = (uint64_t)keys[base + i];
                if (g < (uint64_t)num_groups) out[g] += buf[i];
            }
        } else {
            int64_t i = 0;
            for (; i + 8 <= m; i += 8)
                for (int k = 0; k < 8; k++) acc[k] += buf[i + k];
            for (; i < m; i++) acc[0] += buf[i];
        }
    }
    if (!keys) out[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return OPS_OK;
}

/* ======================================================================================= */
/* top-k. Order: larger value first, equal values by lower index, NaN below everything, -0.0 == 0.0.
 * Each value maps to an unsigned key with that order (NaN -> 0); small k keeps a min-heap of the k
 * best (key, index) and skips 64-element blocks that hold nothing better than the heap's worst;
 * large k radix-sorts all keys (stable, so equal keys stay in index order). */

typedef struct {
    uint64_t key;
    int64_t idx;
} kv_t;

static inline uint64_t key_f64(double x) {
    uint64_t u = as_u64(x);
    uint64_t mag = u & 0x7fffffffffffffffULL;
    u = mag == 0 ? 0 : u; /* -0.0 -> +0.0 */
    uint64_t k = u ^ ((uint64_t)((int64_t)u >> 63) | 0x8000000000000000ULL);
    return mag > 0x7ff0000000000000ULL ? 0 : k; /* NaN -> 0 */
}
static inline uint64_t key_f32(float x) {
    uint32_t u = as_u32(x);
    uint32_t mag = u & 0x7fffffffu;
    u = mag == 0 ? 0 : u;
    uint32_t k = u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
    return mag > 0x7f800000u ? 0 : (uint64_t)k;
}

/* a ranks below b */
static inline bool kv_worse(kv_t a, kv_t b) { return a.key < b.key || (a.key == b.key && a.idx > b.idx); }

static void heap_sift_down(kv_t *h, int64_t k, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < k && kv_worse(h[l], h[m])) m = l;
        if (r < k && kv_worse(h[r], h[m])) m = r;
        if (m == i) return;
        kv_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

#define TOPK_BLOCK 64

static inline uint64_t key_double(double x) { return key_f64(x); }
static inline uint64_t key_float(float x) { return key_f32(x); }

#define TOPK_FN(T, SUF)                                                                             \
    OPS_MV static uint64_t keys_block_##SUF(const T *restrict x, int64_t cnt, uint64_t *restrict keys) { \
        for (int64_t i = 0; i < cnt; i++) keys[i] = key_##T(x[i]);                                  \
        uint64_t mx = 0;                                                                            \
        for (int64_t i = 0; i < cnt; i++) mx = keys[i] > mx ? keys[i] : mx;                         \
        return mx;                                                                                  \
    }                                                                                               \
    int ops_top_k_##SUF(const T *x, int64_t n, int64_t k, int64_t *idx, T *vals) {                  \
        if (n < 0 || k < 0) return OPS_EINVAL;                                                      \
        if (k > n) k = n;                                                                           \
        if (k == 0) return OPS_OK;                                                                  \
        if (k <= 4096 && k <= n / 4 + 64) {                                                         \
            kv_t *h = malloc(sizeof(kv_t) * (size_t)k);                                             \
            if (!h) return OPS_ENOMEM;                                                              \
            uint64_t keys[TOPK_BLOCK];                                                              \
            int64_t filled = 0;                                                                     \
            for (int64_t base = 0; base < n; base += TOPK_BLOCK) {                                  \
                int64_t m = n - base < TOPK_BLOCK ? n - base : TOPK_BLOCK;                          \
                uint64_t mx = keys_block_##SUF(x + base, m, keys);                                  \
                int64_t i = 0;                                                                      \
                for (; i < m && filled < k; i++) {                                                  \
                    h[filled].key = keys[i];                                                        \
                    h[filled].idx = base + i;                                                       \
                    filled++;                                                                       \
                    if (filled == k)                                                                \
                        for (int64_t p = k / 2 - 1; p >= 0; p--) heap_sift_down(h, k, p);           \
                }                                                                                   \
                if (i == m || mx <= h[0].key) continue;                                             \
                for (; i < m; i++) {                                                                \
                    if (keys[i] > h[0].key) { /* equal key has a higher index: worse */            \
                        h[0].key = keys[i];                                                         \
                        h[0].idx = base + i;                                                        \
                        heap_sift_down(h, k, 0);                                                    \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
            for (int64_t r = k - 1; r >= 0; r--) { /* pop worst to the back */                     \
                idx[r] = h[0].idx;                                                                  \
                h[0] = h[r];                                                                        \
                heap_sift_down(h, r, 0);                                                            \
            }                                                                                       \
            free(h);                                                                                \
        } else {                                                                                    \
            int rc = topk_radix(n, k, idx, (const void *)x, sizeof(T) == 8);                        \
            if (rc) return rc;                                                                      \
        }                                                                                           \
        for (int64_t r = 0; r < k; r++) {                                                           \
            int64_t i = idx[r];                                                                     \
            vals[r] = (i >= 0 && i < n) ? x[i] : (T)NAN;                                            \
        }                                                                                           \
        return OPS_OK;                                                                              \
    }

/* LSD radix sort of (~key, index) ascending = key descending, index ascending (stable). */
static int topk_radix(int64_t n, int64_t k, int64_t *idx, const void *x, int is64) {
    kv_t *a = malloc(sizeof(kv_t) * (size_t)n), *b = malloc(sizeof(kv_t) * (size_t)n);
    size_t *cnt = malloc(sizeof(size_t) * 256 * 8);
    if (!a || !b || !cnt) {
        free(a);
        free(b);
        free(cnt);
        return OPS_ENOMEM;
    }
    memset(cnt, 0, sizeof(size_t) * 256 * 8);
    for (int64_t i = 0; i < n; i++) {
        uint64_t key = is64 ? key_f64(((const double *)x)[i]) : key_f32(((const float *)x)[i]);
        uint64_t dk = is64 ? ~key : (uint64_t)(uint32_t)~(uint32_t)key;
        a[i].key = dk;
        a[i].idx = i;
        for (int p = 0; p < 8; p++) cnt[p * 256 + ((dk >> (8 * p)) & 0xFF)]++;
    }
    for (int p = 0; p < 8; p++) {
        size_t *c = cnt + p * 256;
        bool trivial = false;
        for (int d = 0; d < 256; d++)
            if (c[d] == (size_t)n) trivial = true;
        if (trivial) continue;
        size_t sum = 0;
        for (int d = 0; d < 256; d++) {
            size_t t = c[d];
            c[d] = sum;
            sum += t;
        }
        for (int64_t i = 0; i < n; i++) b[c[(a[i].key >> (8 * p)) & 0xFF]++] = a[i];
        kv_t *t = a;
        a = b;
        b = t;
    }
    for (int64_t r = 0; r < k; r++) idx[r] = a[r].idx;
    free(a);
    free(b);
    free(cnt);
    return OPS_OK;
}

TOPK_FN(double, f64)
TOPK_FN(float, f32)

/* ======================================================================================= */
/* Image: bilinear resize with half-pixel centres, then (x/255 - mean)/std, HWC uint8 -> CHW float32. */

typedef struct {
    int64_t i0, i1;
    double w;
} tap_t;

static void make_taps(int64_t in, int64_t out, tap_t *taps) {
    double scale = (double)in / (double)out;
    for (int64_t o = 0; o < out; o++) {
        double src = ((double)o + 0.5) * scale - 0.5;
        if (src < 0) src = 0;
        if (src > (double)(in - 1)) src = (double)(in - 1);
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) i0 = in - 1;
        int64_t i1 = i0 + 1 < in ? i0 + 1 : in - 1;
        taps[o].i0 = i0;
        taps[o].i1 = i1;
        taps[o].w = src - (double)i0;
    }
}

/* One source row interpolated horizontally: dst[x*c + ch]. */
OPS_MV static void hrow(const uint8_t *restrict row, int64_t c, const tap_t *restrict tx, int64_t out_w,
                        double *restrict dst) {
    if (c == 3) {
        for (int64_t x = 0; x < out_w; x++) {
            const uint8_t *p0 = row + tx[x].i0 * 3, *p1 = row + tx[x].i1 * 3;
            double w = tx[x].w;
            for (int ch = 0; ch < 3; ch++) dst[x * 3 + ch] = p0[ch] + w * ((double)p1[ch] - p0[ch]);
        }
    } else {
        for (int64_t x = 0; x < out_w; x++) {
            const uint8_t *p0 = row + tx[x].i0 * c, *p1 = row + tx[x].i1 * c;
            double w = tx[x].w;
            for (int64_t ch = 0; ch < c; ch++) dst[x * c + ch] = p0[ch] + w * ((double)p1[ch] - p0[ch]);
        }
    }
}

OPS_MV static void vrow(const double *restrict a, const double *restrict b, double wy, int64_t c, int64_t out_w,
                        const double *restrict scale, const double *restrict bias, float *restrict out,
                        int64_t plane) {
    for (int64_t ch = 0; ch < c; ch++) {
        double sc = scale[ch], bi = bias[ch];
        float *o = out + ch * plane;
        for (int64_t x = 0; x < out_w; x++) {
            double va = a[x * c + ch], vb = b[x * c + ch];
            o[x] = (float)((va + wy * (vb - va)) * sc + bi);
        }
    }
}

int ops_image_preprocess(const uint8_t *img, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                         const double *mean, const double *std, float *out) {
    if (h < 1 || w < 1 || c < 1 || c > 4 || out_h < 1 || out_w < 1) return OPS_EINVAL;
    if (too_big(h, w) || too_big(h * w, c) || too_big(out_h, out_w) || too_big(out_h * out_w, c))
        return OPS_ETOOBIG;
    double scale[4], bias[4];
    for (int64_t ch = 0; ch < c; ch++) {
        if (!(std[ch] != 0) || isnan(mean[ch])) return OPS_EINVAL;
        scale[ch] = 1.0 / (255.0 * std[ch]);
        bias[ch] = -mean[ch] / std[ch];
    }
    tap_t *tx = malloc(sizeof(tap_t) * (size_t)out_w), *ty = malloc(sizeof(tap_t) * (size_t)out_h);
    double *ra = malloc(sizeof(double) * (size_t)(out_w * c)), *rb = malloc(sizeof(double) * (size_t)(out_w * c));
    if (!tx || !ty || !ra || !rb) {
        free(tx);
        free(ty);
        free(ra);
        free(rb);
        return OPS_ENOMEM;
    }
    make_taps(w, out_w, tx);
    make_taps(h, out_h, ty);
    int64_t have_a = -1, have_b = -1, plane = out_h * out_w;
    for (int64_t y = 0; y < out_h; y++) {
        int64_t y0 = ty[y].i0, y1 = ty[y].i1;
        if (have_a != y0) {
            if (have_b == y0) { /* moving down: the old second row is the new first row */
                double *t = ra;
                ra = rb;
                rb = t;
                have_b = have_a;
            } else {
                hrow(img + y0 * w * c, c, tx, out_w, ra);
            }
            have_a = y0;
        }
        if (have_b != y1) {
            if (y1 == y0) {
                memcpy(rb, ra, sizeof(double) * (size_t)(out_w * c));
            } else {
                hrow(img + y1 * w * c, c, tx, out_w, rb);
            }
            have_b = y1;
        }
        vrow(ra, rb, ty[y].w, c, out_w, scale, bias, out + y * out_w, plane);
    }
    free(tx);
    free(ty);
    free(ra);
    free(rb);
    return OPS_OK;
}

/* ======================================================================================= */
/* Tokenizer: words are maximal runs of non-separator code points; ASCII letters are lowered here
 * (the Python side lowers non-ASCII text with str.lower() first). Separators: ASCII other than
 * [0-9A-Za-z], U+0080-U+00BF, U+00D7, U+00F7, U+2000-U+206F, U+3000-U+303F, U+FEFF, U+FF01-U+FF0F,
 * U+FF1A-U+FF20, U+FF3B-U+FF40, U+FF5B-U+FF65. Words are re-joined with single spaces, so the
 * n-gram starting at word i is one contiguous slice of the normalised text. */

static inline bool is_word_ascii(unsigned char ch) {
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static inline bool sep_cp(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x206F) ||
           (cp >= 0x3000 && cp <= 0x303F) || cp == 0xFEFF || (cp >= 0xFF01 && cp <= 0xFF0F) ||
           (cp >= 0xFF1A && cp <= 0xFF20) || (cp >= 0xFF3B && cp <= 0xFF40) || (cp >= 0xFF5B && cp <= 0xFF65);
}

/* Length of the code point at p (1..4, 1 for a malformed byte) and whether it separates words. */
static inline int cp_at(const unsigned char *p, int64_t rem, bool *sep) {
    unsigned char b0 = p[0];
    if (b0 < 0x80) {
        *sep = !is_word_ascii(b0);
        return 1;
    }
    int len;
    uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        cp = b0 & 0x07;
    } else {
        *sep = false;
        return 1;
    }
    if (rem < len) {
        *sep = false;
        return 1;
    }
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) {
            *sep = false;
            return 1;
        }
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    *sep = sep_cp(cp);
    return len;
}

typedef struct {
    unsigned char *norm; /* normalised words joined by ' ' */
    int64_t *ws, *we;    /* word i is norm[ws[i]:we[i]] */
    int64_t cap;         /* capacity of norm; ws/we hold cap entries */
} tok_scratch;

static int tok_reserve(tok_scratch *s, int64_t need) {
    if (need <= s->cap) return OPS_OK;
    int64_t cap = s->cap ? s->cap : 256;
    while (cap < need) cap *= 2;
    unsigned char *norm = realloc(s->norm, (size_t)cap);
    if (!norm) return OPS_ENOMEM;
    s->norm = norm;
    int64_t *ws = realloc(s->ws, sizeof(int64_t) * (size_t)cap);
    if (!ws) return OPS_ENOMEM;
    s->ws = ws;
    int64_t *we = realloc(s->we, sizeof(int64_t) * (size_t)cap);
    if (!we) return OPS_ENOMEM;
    s->we = we;
    s->cap = cap;
    return OPS_OK;
}

int ops_tokenize(const char *buf, int64_t len, const int64_t *offsets, int64_t n, const int32_t *ngrams,
                 int64_t n_ngrams, int64_t max_tokens, uint32_t seed, int64_t num_buckets, int64_t pad,
                 int64_t *ids, int64_t *lengths) {
    int rc = strs_check(buf, len, offsets, n);
    if (rc) return rc;
    if (num_buckets < 1 || max_tokens < 0 || n_ngrams < 1 || n_ngrams > 64 || too_big(n, max_tokens))
        return OPS_EINVAL;
    int64_t maxn = 0;
    for (int64_t g = 0; g < n_ngrams; g++) {
        if (ngrams[g] < 1 || ngrams[g] > 64) return OPS_EINVAL;
        if (ngrams[g] > maxn) maxn = ngrams[g];
    }
    modulus md = modulus_make((uint64_t)num_buckets, true);
    tok_scratch sc = {0};
    strs s;
    strs_init(&s, buf, len, offsets, n);
    for (int64_t t = 0; t < n; t++) {
        int64_t *row = ids + t * max_tokens;
        for (int64_t j = 0; j < max_tokens; j++) row[j] = pad;
        lengths[t] = 0;
    }
    for (int64_t t = 0; t < n; t++) {
        const unsigned char *p;
        int64_t l;
        if ((rc = strs_next(&s, &p, &l))) goto done;
        if ((rc = tok_reserve(&sc, l + 1))) goto done;
        int64_t *row = ids + t * max_tokens;
        int64_t ntok = 0, nw = 0, q = 0, nl = 0;
        bool more = true;
        for (int64_t i = 0; ntok < max_tokens; i++) {
            while (more && nw < i + maxn) { /* extract words up to i + maxn - 1 */
                bool sep = true;
                while (q < l) { /* skip separators */
                    int cl = cp_at(p + q, l - q, &sep);
                    if (!sep) break;
                    q += cl;
                }
                if (q >= l) {
                    more = false;
                    break;
                }
                if (nl > 0) sc.norm[nl++] = ' ';
                sc.ws[nw] = nl;
                while (q < l) {
                    int cl = cp_at(p + q, l - q, &sep);
                    if (sep) break;
                    for (int k = 0; k < cl; k++) {
                        unsigned char ch = p[q + k];
                        sc.norm[nl++] = (ch >= 'A' && ch <= 'Z') ? (unsigned char)(ch + 32) : ch;
                    }
                    q += cl;
                }
                sc.we[nw] = nl;
                nw++;
            }
            if (i >= nw) break;
            for (int64_t g = 0; g < n_ngrams && ntok < max_tokens; g++) {
                int64_t last = i + ngrams[g] - 1;
                if (last >= nw) continue;
                uint32_t h = mm3(sc.norm + sc.ws[i], sc.we[last] - sc.ws[i], seed);
                row[ntok++] = (int64_t)modulus_apply(&md, h);
            }
        }
        lengths[t] = ntok;
    }
    rc = OPS_OK;
done:
    free(sc.norm);
    free(sc.ws);
    free(sc.we);
    return rc;
}
