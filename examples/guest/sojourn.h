/*
 * sojourn.h — guest helpers for Sojourn objects written in C (object ABI version 1).
 *
 * See docs/object-abi.md for the contract. An object is a core WebAssembly module that
 * imports only from module "sojourn" and exports `memory` and `sojourn_tick` (and optionally
 * `sojourn_on_message`, `sojourn_init`). There is no libc: compile with
 *
 *   clang-19 --target=wasm32-wasi -mcpu=mvp -O2 -g0 -nostdlib \
 *     -Wl,--no-entry -Wl,--strip-all -Wl,-z,stack-size=16384 \
 *     -Wl,--initial-memory=131072 -Wl,--max-memory=131072 \
 *     -o object.wasm object.c
 *
 * (see examples/build.sh). Mark entry points with SJ_EXPORT, e.g.
 *
 *   SJ_EXPORT(sojourn_tick) int64_t tick(int64_t now_ms) { ...; return 100; }
 *
 * Only the imports an object actually calls end up in its module. Every field name below is a
 * NUL-terminated string literal; the helpers pass (ptr, strlen) to the host.
 *
 * If the compiler emits calls to memcpy/memset/memmove/memcmp (large struct copies, array
 * initialisers), define SOJOURN_DEFINE_MEMFUNCS before including this header in exactly one
 * translation unit: the link fails on an undefined symbol otherwise (it would be an import
 * from "env", which the host refuses).
 */
#ifndef SOJOURN_H
#define SOJOURN_H

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef __SIZE_TYPE__ size_t;

/* ---- decisions (return values of sojourn_tick / sojourn_init) ---- */
#define SOJOURN_SLEEP (-1LL)     /* sleep until a message arrives */

/* ---- elections (return values of sojourn_on_message) ---- */
#define SJ_CONSUME 0             /* commit this entry's writes and emitted messages */
#define SJ_DEFER 1               /* keep the message queued; offered again at the next wake */
#define SJ_REJECT 2              /* drop the message (recorded) */

/* ---- log levels ---- */
#define SJ_LOG_ERROR 0
#define SJ_LOG_WARN 1
#define SJ_LOG_INFO 2
#define SJ_LOG_DEBUG 3

/* Export a function under a fixed wasm export name:
 *   SJ_EXPORT(sojourn_tick)       int64_t f(int64_t now_ms);
 *   SJ_EXPORT(sojourn_on_message) int32_t f(int32_t len);
 *   SJ_EXPORT(sojourn_init)       int64_t f(int64_t now_ms);            */
#define SJ_EXPORT(name) __attribute__((export_name(#name)))

#define SJ_IMPORT(name) __attribute__((import_module("sojourn"), import_name(#name)))

/* ---- raw imports (module "sojourn"); pointers are offsets into `memory` ---- */
SJ_IMPORT(field_get_i64)   int64_t sojourn_field_get_i64(const char *name, int32_t name_len);
SJ_IMPORT(field_set_i64)   void    sojourn_field_set_i64(const char *name, int32_t name_len, int64_t value);
SJ_IMPORT(field_get_bool)  int32_t sojourn_field_get_bool(const char *name, int32_t name_len);
SJ_IMPORT(field_set_bool)  void    sojourn_field_set_bool(const char *name, int32_t name_len, int32_t value);
SJ_IMPORT(field_get_bytes) int32_t sojourn_field_get_bytes(const char *name, int32_t name_len, void *out, int32_t out_cap);
SJ_IMPORT(field_set_bytes) void    sojourn_field_set_bytes(const char *name, int32_t name_len, const void *ptr, int32_t len);
SJ_IMPORT(field_get_cbor)  int32_t sojourn_field_get_cbor(const char *name, int32_t name_len, void *out, int32_t out_cap);
SJ_IMPORT(field_set_cbor)  void    sojourn_field_set_cbor(const char *name, int32_t name_len, const void *ptr, int32_t len);
SJ_IMPORT(msg_len)         int32_t sojourn_msg_len(void);
SJ_IMPORT(msg_read)        int32_t sojourn_msg_read(void *out, int32_t out_cap);
SJ_IMPORT(emit)            void    sojourn_emit(const void *ptr, int32_t len);
SJ_IMPORT(log)             void    sojourn_log(int32_t level, const void *ptr, int32_t len);
SJ_IMPORT(now)             int64_t sojourn_now(void);
SJ_IMPORT(random)          void    sojourn_random(void *out, int32_t len);
SJ_IMPORT(last_rejection)  int32_t sojourn_last_rejection(void *out, int32_t out_cap);

/* Length of a NUL-terminated name. For a string literal (the usual case, after inlining at
 * -O1 and above) __builtin_strlen folds to a constant; otherwise a plain loop counts it, so no
 * libc strlen is ever needed. (Do not compile with -ffreestanding/-fno-builtin: that stops
 * the folding.) */
static inline __attribute__((always_inline)) int32_t sj_strlen(const char *s) {
    if (__builtin_constant_p(__builtin_strlen(s))) return (int32_t)__builtin_strlen(s);
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}
#define SJ_LEN(s) sj_strlen(s)

/* ---- fields (staged writes: nothing changes until the entry returns and commits) ---- */
static inline int64_t sj_get_i64(const char *name) { return sojourn_field_get_i64(name, SJ_LEN(name)); }
static inline void sj_set_i64(const char *name, int64_t v) { sojourn_field_set_i64(name, SJ_LEN(name), v); }
static inline int sj_get_bool(const char *name) { return sojourn_field_get_bool(name, SJ_LEN(name)) != 0; }
static inline void sj_set_bool(const char *name, int v) { sojourn_field_set_bool(name, SJ_LEN(name), v ? 1 : 0); }
/* string/bytes/enum: copies min(len, cap) bytes, returns the full length */
static inline int32_t sj_get_bytes(const char *name, void *buf, int32_t cap) {
    return sojourn_field_get_bytes(name, SJ_LEN(name), buf, cap);
}
static inline void sj_set_bytes(const char *name, const void *buf, int32_t len) {
    sojourn_field_set_bytes(name, SJ_LEN(name), buf, len);
}
/* a string or enum field from a NUL-terminated C string (e.g. an enum variant name) */
static inline void sj_set_str(const char *name, const char *s) { sj_set_bytes(name, s, SJ_LEN(s)); }
/* any field as canonical CBOR (lists, maps) */
static inline int32_t sj_get_cbor(const char *name, void *buf, int32_t cap) {
    return sojourn_field_get_cbor(name, SJ_LEN(name), buf, cap);
}
static inline void sj_set_cbor(const char *name, const void *buf, int32_t len) {
    sojourn_field_set_cbor(name, SJ_LEN(name), buf, len);
}

/* ---- messages ---- */
/* length of the offered message, -1 outside sojourn_on_message */
static inline int32_t sj_msg_len(void) { return sojourn_msg_len(); }
/* copies min(len, cap) bytes of the offered message, returns its full length (-1 outside) */
static inline int32_t sj_msg_read(void *buf, int32_t cap) { return sojourn_msg_read(buf, cap); }
/* the same, under the name docs/object-abi.md uses */
static inline int32_t sj_msg(void *buf, int32_t cap) { return sojourn_msg_read(buf, cap); }
/* outbound message; leaves the object only if the entry commits */
static inline void sj_emit(const void *buf, int32_t len) { sojourn_emit(buf, len); }

/* ---- environment (all recorded, so replay reproduces it) ---- */
static inline void sj_log(int32_t level, const char *s) { sojourn_log(level, s, SJ_LEN(s)); }
static inline void sj_log_n(int32_t level, const void *buf, int32_t len) { sojourn_log(level, buf, len); }
static inline int64_t sj_now(void) { return sojourn_now(); }
/* at most 256 bytes per call, 1024 per entry */
static inline void sj_random(void *buf, int32_t len) { sojourn_random(buf, len); }
/* reason the previous entry was rejected (copies min(len, cap) bytes, returns full length),
 * or 0 if it was not */
static inline int32_t sj_last_rejection(void *buf, int32_t cap) { return sojourn_last_rejection(buf, cap); }

/* ---- small text helpers (no libc) ---- */
/* writes the decimal form of v to buf (needs 20 bytes), returns the length */
static inline int32_t sj_fmt_i64(char *buf, int64_t v) {
    char tmp[20];
    int32_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do { tmp[n++] = (char)('0' + (int)(u % 10)); u /= 10; } while (u);
    if (v < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}
/* parses an optional '-' and 1..18 decimal digits spanning all of buf[0..len);
 * returns 1 and stores the value on success, 0 otherwise */
static inline int sj_parse_i64(const char *buf, int32_t len, int64_t *out) {
    int32_t i = 0;
    int neg = 0;
    int64_t v = 0;
    if (len > 0 && buf[0] == '-') { neg = 1; i = 1; }
    if (i >= len || len - i > 18) return 0;
    for (; i < len; i++) {
        if (buf[i] < '0' || buf[i] > '9') return 0;
        v = v * 10 + (buf[i] - '0');
    }
    *out = neg ? -v : v;
    return 1;
}
/* 1 if buf[0..len) starts with the NUL-terminated prefix */
static inline int sj_starts_with(const char *buf, int32_t len, const char *prefix) {
    int32_t n = SJ_LEN(prefix);
    if (len < n) return 0;
    for (int32_t i = 0; i < n; i++) if (buf[i] != prefix[i]) return 0;
    return 1;
}
/* 1 if buf[0..len) equals the NUL-terminated string */
static inline int sj_equals(const char *buf, int32_t len, const char *s) {
    return len == SJ_LEN(s) && sj_starts_with(buf, len, s);
}

#ifdef SOJOURN_DEFINE_MEMFUNCS
/* no_builtin keeps clang from turning these loops back into calls to themselves */
__attribute__((no_builtin)) void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *dp = (uint8_t *)d; const uint8_t *sp = (const uint8_t *)s;
    while (n--) *dp++ = *sp++;
    return d;
}
__attribute__((no_builtin)) void *memmove(void *d, const void *s, size_t n) {
    uint8_t *dp = (uint8_t *)d; const uint8_t *sp = (const uint8_t *)s;
    if (dp < sp) { while (n--) *dp++ = *sp++; }
    else { dp += n; sp += n; while (n--) *--dp = *--sp; }
    return d;
}
__attribute__((no_builtin)) void *memset(void *d, int c, size_t n) {
    uint8_t *dp = (uint8_t *)d;
    while (n--) *dp++ = (uint8_t)c;
    return d;
}
__attribute__((no_builtin)) int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (; n; n--, x++, y++) if (*x != *y) return *x - *y;
    return 0;
}
#endif

#endif /* SOJOURN_H */
