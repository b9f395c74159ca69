/*
 * test_gguf.c: the GGUF reader (gguf.c) against files built in memory.
 *
 * A small builder writes a valid GGUF v3 file with every metadata value type, a string array, a nested
 * array and tensors of several types, recording where each field lies so that tests can corrupt one
 * field at a time. Checked: the valid file parses to the right values; every truncation and a few
 * thousand random byte flips fail cleanly (run under ASan/UBSan with -DRWKVC_SANITIZE=ON: each input
 * is copied into an exact-size heap buffer so any over-read is caught); each kind of malformed field
 * gives the expected status and a message naming the problem. Prints only on failure.
 */
/* mkstemp, write and unlink are POSIX, not C11. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "status.h"

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* Expects status `want` and a message containing `phrase`. */
#define CHECK_FAIL(st, want, phrase) check_fail((st), (want), (phrase), __FILE__, __LINE__)

static void check_fail(rwkvc_status st, rwkvc_status want, const char *phrase, const char *file, int line) {
    const char *msg = rwkvc_last_error();
    if (st != want || strstr(msg, phrase) == NULL) {
        fprintf(stderr, "%s:%d: expected status %d with \"%s\", got %d: \"%s\"\n", file, line, (int)want, phrase,
                (int)st, msg);
        failures++;
    }
}

/* ---- A tiny GGUF writer ---- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        if (b->p == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_u8(buf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(buf *b, uint16_t v) { uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; put(b, t, 2); }
static void put_u32(buf *b, uint32_t v) { put_u16(b, (uint16_t)v); put_u16(b, (uint16_t)(v >> 16)); }
static void put_u64(buf *b, uint64_t v) { put_u32(b, (uint32_t)v); put_u32(b, (uint32_t)(v >> 32)); }
static void put_strn(buf *b, const char *s, size_t n) { put_u64(b, n); put(b, s, n); }
static void put_str(buf *b, const char *s) { put_strn(b, s, strlen(s)); }

static void patch_u32(uint8_t *p, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[at + i] = (uint8_t)(v >> (8 * i));
    }
}

static void patch_u64(uint8_t *p, size_t at, uint64_t v) {
    patch_u32(p, at, (uint32_t)v);
    patch_u32(p, at + 4, (uint32_t)(v >> 32));
}

typedef struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
} tspec;

/* Bytes of a tensor, from the test's own table (not the reader's). */
static uint64_t spec_nbytes(const tspec *t) {
    uint64_t block = 1, bytes = 4;
    switch (t->type) {
    case RWKVC_TYPE_F32: break;
    case RWKVC_TYPE_F16: case RWKVC_TYPE_BF16: bytes = 2; break;
    case RWKVC_TYPE_Q8_0: block = 32; bytes = 34; break;
    case RWKVC_TYPE_Q4_K: block = 256; bytes = 144; break;
    default: return 0;
    }
    uint64_t n = t->ne[0] / block * bytes;
    for (uint32_t d = 1; d < t->n_dims; d++) {
        n *= t->ne[d];
    }
    return n;
}

#define MAX_T 8

/* The default tensors. The last one ends the file: no padding after it, so every truncation is invalid. */
static const tspec DEFAULT_TENSORS[] = {
    {"a", 2, {4, 3, 1, 1}, RWKVC_TYPE_F32},
    {"blk.0.q", 2, {64, 2, 1, 1}, RWKVC_TYPE_Q8_0},
    {"k", 1, {256, 1, 1, 1}, RWKVC_TYPE_Q4_K},
    {"bf", 4, {8, 1, 1, 2}, RWKVC_TYPE_BF16},
    /* 64 bytes: the longest name ggml allows. */
    {"x123456789012345678901234567890123456789012345678901234567890abc", 1, {2, 1, 1, 1}, RWKVC_TYPE_F16},
};
#define N_DEFAULT_TENSORS (sizeof(DEFAULT_TENSORS) / sizeof(DEFAULT_TENSORS[0]))
#define N_STANDARD_KVS 17

typedef struct {
    /* Inputs. */
    uint32_t alignment;          /* Written as general.alignment (u32) unless 0 (then the default 32 applies). */
    const tspec *tensors;        /* NULL: DEFAULT_TENSORS. */
    size_t n_tensors;
    void (*extra)(buf *b);       /* Writes n_extra raw kv records after the standard ones. */
    uint64_t n_extra;
    /* Positions filled by build(). */
    size_t m_arch_len;           /* u64 length of general.architecture's value. */
    size_t m_first_key_len;      /* u64 length of the first key. */
    size_t m_bool_type, m_bool_value;
    size_t m_ndims[MAX_T], m_ne[MAX_T], m_type[MAX_T], m_offset[MAX_T];
    uint64_t offsets[MAX_T], nbytes[MAX_T];
    size_t data_offset;
} fspec;

static uint64_t align_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

/* Byte j of tensor i's data. */
static uint8_t data_byte(size_t i, uint64_t j) {
    return (uint8_t)(i * 37 + j * 11 + 1);
}

static buf build(fspec *f) {
    if (f->tensors == NULL) {
        f->tensors = DEFAULT_TENSORS;
        f->n_tensors = N_DEFAULT_TENSORS;
    }
    uint64_t align = f->alignment ? f->alignment : 32;
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, f->n_tensors);
    put_u64(&b, N_STANDARD_KVS + (f->alignment ? 1 : 0) + f->n_extra);

    f->m_first_key_len = b.n;
    put_str(&b, "general.architecture");
    put_u32(&b, RWKVC_META_STRING);
    f->m_arch_len = b.n;
    put_str(&b, "rwkv7");
    if (f->alignment) {
        put_str(&b, "general.alignment");
        put_u32(&b, RWKVC_META_U32);
        put_u32(&b, f->alignment);
    }
    put_str(&b, "t.u8"); put_u32(&b, RWKVC_META_U8); put_u8(&b, 200);
    put_str(&b, "t.i8"); put_u32(&b, RWKVC_META_I8); put_u8(&b, (uint8_t)-5);
    put_str(&b, "t.u16"); put_u32(&b, RWKVC_META_U16); put_u16(&b, 60000);
    put_str(&b, "t.i16"); put_u32(&b, RWKVC_META_I16); put_u16(&b, (uint16_t)-30000);
    put_str(&b, "t.u32"); put_u32(&b, RWKVC_META_U32); put_u32(&b, 4000000000u);
    put_str(&b, "t.i32"); put_u32(&b, RWKVC_META_I32); put_u32(&b, (uint32_t)-2000000000);
    float f32 = 1.5f;
    uint32_t f32_bits;
    memcpy(&f32_bits, &f32, 4);
    put_str(&b, "t.f32"); put_u32(&b, RWKVC_META_F32); put_u32(&b, f32_bits);
    f->m_bool_type = b.n + 8 + strlen("t.bool");
    put_str(&b, "t.bool"); put_u32(&b, RWKVC_META_BOOL);
    f->m_bool_value = b.n;
    put_u8(&b, 1);
    put_str(&b, "t.u64"); put_u32(&b, RWKVC_META_U64); put_u64(&b, (1ull << 63) + 5);
    put_str(&b, "t.i64"); put_u32(&b, RWKVC_META_I64); put_u64(&b, (uint64_t)-(1ll << 40));
    double f64 = 0.1;
    uint64_t f64_bits;
    memcpy(&f64_bits, &f64, 8);
    put_str(&b, "t.f64"); put_u32(&b, RWKVC_META_F64); put_u64(&b, f64_bits);
    put_str(&b, "t.strs"); put_u32(&b, RWKVC_META_ARRAY); put_u32(&b, RWKVC_META_STRING); put_u64(&b, 4);
    put_str(&b, "<s>"); put_str(&b, ""); put_str(&b, "a\nb"); put_strn(&b, "\xff\0z", 3);
    put_str(&b, "t.ints"); put_u32(&b, RWKVC_META_ARRAY); put_u32(&b, RWKVC_META_I32); put_u64(&b, 3);
    put_u32(&b, 1); put_u32(&b, (uint32_t)-2); put_u32(&b, 3);
    put_str(&b, "t.nested"); put_u32(&b, RWKVC_META_ARRAY); put_u32(&b, RWKVC_META_ARRAY); put_u64(&b, 2);
    put_u32(&b, RWKVC_META_U8); put_u64(&b, 2); put_u8(&b, 7); put_u8(&b, 8);
    put_u32(&b, RWKVC_META_STRING); put_u64(&b, 1); put_str(&b, "in");
    put_str(&b, "t.empty"); put_u32(&b, RWKVC_META_ARRAY); put_u32(&b, RWKVC_META_F32); put_u64(&b, 0);
    put_str(&b, "t.str"); put_u32(&b, RWKVC_META_STRING); put_str(&b, "hello");
    if (f->extra) {
        f->extra(&b);
    }

    uint64_t off = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const tspec *t = &f->tensors[i];
        put_str(&b, t->name);
        f->m_ndims[i] = b.n;
        put_u32(&b, t->n_dims);
        f->m_ne[i] = b.n;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            put_u64(&b, t->ne[d]);
        }
        f->m_type[i] = b.n;
        put_u32(&b, t->type);
        f->m_offset[i] = b.n;
        off = align_up(off, align);
        f->offsets[i] = off;
        f->nbytes[i] = spec_nbytes(t);
        put_u64(&b, off);
        off += f->nbytes[i];
    }
    while (b.n % align != 0) {
        put_u8(&b, 0);
    }
    f->data_offset = b.n;
    for (size_t i = 0; i < f->n_tensors; i++) {
        while (b.n < f->data_offset + f->offsets[i]) {
            put_u8(&b, 0);
        }
        for (uint64_t j = 0; j < f->nbytes[i]; j++) {
            put_u8(&b, data_byte(i, j));
        }
    }
    return b;
}

/* Opens a copy of data[0..n) in an exact-size heap buffer (so ASan sees any over-read), then releases it. */
static rwkvc_status open_copy(const uint8_t *data, size_t n, void (*inspect)(const rwkvc_gguf *g)) {
    uint8_t *copy = malloc(n ? n : 1);
    if (n) {
        memcpy(copy, data, n);
    }
    rwkvc_clear_error();
    rwkvc_gguf *g = NULL;
    rwkvc_status st = rwkvc_gguf_open_memory(n ? copy : NULL, n, &g);
    if (st == RWKVC_OK) {
        if (inspect) {
            inspect(g);
        }
        rwkvc_gguf_close(g);
    } else {
        CHECK(g == NULL);
        CHECK(rwkvc_last_error()[0] != '\0');
    }
    free(copy);
    return st;
}

/* ---- The valid file ---- */

static void check_valid(const rwkvc_gguf *g, const fspec *f, const uint8_t *file, size_t size) {
    CHECK(g->version == 3);
    CHECK(g->size == size);
    CHECK(g->alignment == (f->alignment ? f->alignment : 32));
    CHECK(g->data_offset == f->data_offset);
    CHECK(g->n_kv == N_STANDARD_KVS + (f->alignment ? 1 : 0) + f->n_extra);
    CHECK(g->n_tensors == f->n_tensors);

    int64_t i64;
    double d;
    const char *s;
    size_t len;
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(g, "general.architecture");
    CHECK(kv != NULL && kv->type == RWKVC_META_STRING && kv->count == 1);
    CHECK(kv && rwkvc_gguf_kv_string(kv, 0, &s, &len) == RWKVC_OK && len == 5 && memcmp(s, "rwkv7", 5) == 0);
    CHECK(kv && (const uint8_t *)s == file + f->m_arch_len + 8); /* Zero-copy: points into the buffer. */

    static const struct { const char *key; int64_t value; } ints[] = {
        {"t.u8", 200}, {"t.i8", -5}, {"t.u16", 60000}, {"t.i16", -30000}, {"t.u32", 4000000000ll},
        {"t.i32", -2000000000ll}, {"t.bool", 1}, {"t.i64", -(1ll << 40)},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        kv = rwkvc_gguf_find_kv(g, ints[i].key);
        CHECK(kv != NULL && kv->count == 1);
        i64 = 0;
        CHECK(kv && rwkvc_gguf_kv_int(kv, 0, &i64) == RWKVC_OK && i64 == ints[i].value);
        d = 0;
        if (kv && kv->type != RWKVC_META_BOOL) {
            CHECK(rwkvc_gguf_kv_float(kv, 0, &d) == RWKVC_OK && d == (double)ints[i].value);
        }
    }
    kv = rwkvc_gguf_find_kv(g, "t.bool");
    CHECK_FAIL(rwkvc_gguf_kv_float(kv, 0, &d), RWKVC_ERR_ARG, "is a bool, not a number");
    kv = rwkvc_gguf_find_kv(g, "t.u64");
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 0, &i64), RWKVC_ERR_ARG, "does not fit in an int64");
    CHECK(rwkvc_gguf_kv_float(kv, 0, &d) == RWKVC_OK && d == (double)((1ull << 63) + 5));
    uint64_t u64 = 0;
    CHECK(rwkvc_gguf_kv_uint(kv, 0, &u64) == RWKVC_OK && u64 == (1ull << 63) + 5);
    CHECK(rwkvc_gguf_kv_uint(rwkvc_gguf_find_kv(g, "t.u32"), 0, &u64) == RWKVC_OK && u64 == 4000000000u);
    CHECK_FAIL(rwkvc_gguf_kv_uint(rwkvc_gguf_find_kv(g, "t.i8"), 0, &u64), RWKVC_ERR_ARG, "value -5 is negative");
    CHECK_FAIL(rwkvc_gguf_kv_uint(rwkvc_gguf_find_kv(g, "t.str"), 0, &u64), RWKVC_ERR_ARG, "not an integer");
    CHECK_FAIL(rwkvc_gguf_kv_uint(kv, 1, &u64), RWKVC_ERR_ARG, "out of range");
    kv = rwkvc_gguf_find_kv(g, "t.f32");
    CHECK(kv && rwkvc_gguf_kv_float(kv, 0, &d) == RWKVC_OK && d == 1.5);
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 0, &i64), RWKVC_ERR_ARG, "metadata key 't.f32' is a f32, not an integer");
    kv = rwkvc_gguf_find_kv(g, "t.f64");
    CHECK(kv && rwkvc_gguf_kv_float(kv, 0, &d) == RWKVC_OK && d == 0.1);
    CHECK_FAIL(rwkvc_gguf_kv_float(kv, 1, &d), RWKVC_ERR_ARG, "index 1 out of range (1 element)");
    kv = rwkvc_gguf_find_kv(g, "t.str");
    CHECK(kv && rwkvc_gguf_kv_string(kv, 0, &s, &len) == RWKVC_OK && len == 5 && memcmp(s, "hello", 5) == 0);
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 0, &i64), RWKVC_ERR_ARG, "is a string, not an integer");

    /* String array: one element at a time and all at once. */
    kv = rwkvc_gguf_find_kv(g, "t.strs");
    CHECK(kv != NULL && kv->type == RWKVC_META_ARRAY && kv->array_type == RWKVC_META_STRING && kv->count == 4);
    const char *ptrs[4];
    size_t lens[4];
    CHECK(kv && rwkvc_gguf_kv_strings(kv, ptrs, lens, 4) == RWKVC_OK);
    CHECK(lens[0] == 3 && memcmp(ptrs[0], "<s>", 3) == 0);
    CHECK(lens[1] == 0);
    CHECK(lens[2] == 3 && memcmp(ptrs[2], "a\nb", 3) == 0);
    CHECK(lens[3] == 3 && memcmp(ptrs[3], "\xff\0z", 3) == 0);
    CHECK(kv && rwkvc_gguf_kv_string(kv, 2, &s, &len) == RWKVC_OK && s == ptrs[2] && len == 3);
    CHECK(kv && rwkvc_gguf_kv_string(kv, 3, &s, &len) == RWKVC_OK && s == ptrs[3] && len == 3);
    CHECK_FAIL(rwkvc_gguf_kv_string(kv, 4, &s, &len), RWKVC_ERR_ARG, "index 4 out of range (4 elements)");
    CHECK_FAIL(rwkvc_gguf_kv_strings(kv, ptrs, lens, 3), RWKVC_ERR_SIZE, "has 4 strings");
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 0, &i64), RWKVC_ERR_ARG, "is an array of string, not an integer");

    kv = rwkvc_gguf_find_kv(g, "t.ints");
    CHECK(kv != NULL && kv->array_type == RWKVC_META_I32 && kv->count == 3 && kv->value_bytes == 12);
    CHECK(kv && rwkvc_gguf_kv_int(kv, 1, &i64) == RWKVC_OK && i64 == -2);
    CHECK(kv && rwkvc_gguf_kv_float(kv, 2, &d) == RWKVC_OK && d == 3.0);
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 3, &i64), RWKVC_ERR_ARG, "out of range");
    CHECK_FAIL(rwkvc_gguf_kv_string(kv, 0, &s, &len), RWKVC_ERR_ARG, "is an array of i32, not a string");
    CHECK_FAIL(rwkvc_gguf_kv_strings(kv, ptrs, lens, 3), RWKVC_ERR_ARG, "not an array of string");

    kv = rwkvc_gguf_find_kv(g, "t.nested");
    CHECK(kv != NULL && kv->array_type == RWKVC_META_ARRAY && kv->count == 2 && kv->value_bytes == 2 * 12 + 2 + 10);
    CHECK_FAIL(rwkvc_gguf_kv_int(kv, 0, &i64), RWKVC_ERR_ARG, "is an array of array");
    kv = rwkvc_gguf_find_kv(g, "t.empty");
    CHECK(kv != NULL && kv->array_type == RWKVC_META_F32 && kv->count == 0 && kv->value_bytes == 0);
    CHECK_FAIL(rwkvc_gguf_kv_float(kv, 0, &d), RWKVC_ERR_ARG, "index 0 out of range (0 elements)");

    CHECK(rwkvc_gguf_find_kv(g, "t.u") == NULL);
    CHECK(rwkvc_gguf_find_kv(g, "t.u88") == NULL);
    const rwkvc_gguf_kv *got = NULL;
    CHECK_FAIL(rwkvc_gguf_get_kv(g, "no.such.key", &got), RWKVC_ERR_ARG, "metadata key 'no.such.key' not found");
    CHECK(got == NULL);
    CHECK(rwkvc_gguf_get_kv(g, "t.u8", &got) == RWKVC_OK && got == rwkvc_gguf_find_kv(g, "t.u8"));
    /* Keys keep file order. */
    CHECK(g->kv[0].key_len == 20 && memcmp(g->kv[0].key, "general.architecture", 20) == 0);

    for (size_t i = 0; i < f->n_tensors; i++) {
        const tspec *ts = &f->tensors[i];
        const rwkvc_gguf_tensor *t = rwkvc_gguf_find_tensor(g, ts->name);
        CHECK(t == &g->tensors[i]);
        if (t == NULL) {
            continue;
        }
        CHECK(t->name_len == strlen(ts->name) && memcmp(t->name, ts->name, t->name_len) == 0);
        CHECK(t->n_dims == ts->n_dims && t->type == ts->type);
        for (uint32_t dd = 0; dd < 4; dd++) {
            CHECK(t->ne[dd] == (dd < ts->n_dims ? ts->ne[dd] : 1));
        }
        CHECK(t->nbytes == f->nbytes[i]);
        CHECK(t->nbytes == rwkvc_tensor_nbytes(t->type, t->ne));
        CHECK((const uint8_t *)t->data == file + f->data_offset + f->offsets[i]);
        CHECK(((const uint8_t *)t->data - file) % g->alignment == 0);
        bool same = true;
        for (uint64_t j = 0; j < t->nbytes; j++) {
            same = same && ((const uint8_t *)t->data)[j] == data_byte(i, j);
        }
        CHECK(same);
    }
    CHECK(rwkvc_gguf_find_tensor(g, "blk.0") == NULL);
    CHECK(rwkvc_gguf_find_tensor(g, "") == NULL);
}

static void test_valid(uint32_t alignment) {
    fspec f = {.alignment = alignment};
    buf b = build(&f);
    rwkvc_gguf *g = NULL;
    rwkvc_clear_error();
    rwkvc_status st = rwkvc_gguf_open_memory(b.p, b.n, &g);
    CHECK(st == RWKVC_OK);
    if (st != RWKVC_OK) {
        fprintf(stderr, "valid file (alignment %u) refused: %s\n", alignment, rwkvc_last_error());
    } else {
        check_valid(g, &f, b.p, b.n);
        rwkvc_gguf_close(g);
    }

    /* Version 2 has the same layout. */
    patch_u32(b.p, 4, 2);
    g = NULL;
    CHECK(rwkvc_gguf_open_memory(b.p, b.n, &g) == RWKVC_OK && g != NULL && g->version == 2);
    rwkvc_gguf_close(g);
    free(b.p);
}

/* The same bytes through a real file and mmap. */
static void test_file(void) {
    fspec f = {.alignment = 64};
    buf b = build(&f);
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) {
        free(b.p);
        return;
    }
    CHECK(write(fd, b.p, b.n) == (ssize_t)b.n);
    close(fd);
    rwkvc_gguf *g = NULL;
    rwkvc_status st = rwkvc_gguf_open(path, &g);
    CHECK(st == RWKVC_OK);
    if (st == RWKVC_OK) {
        check_valid(g, &f, g->base, b.n);
        CHECK(memcmp(g->base, b.p, b.n) == 0);
        /* Data of the mapping (page-aligned) is aligned in memory, not only in the file. */
        CHECK((uintptr_t)g->tensors[1].data % 64 == 0);
        rwkvc_gguf_close(g);
    }

    /* A short file and an empty file are format errors, not I/O errors. */
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    if (fp) {
        fwrite(b.p, 1, 10, fp);
        fclose(fp);
    }
    g = NULL;
    CHECK_FAIL(rwkvc_gguf_open(path, &g), RWKVC_ERR_FORMAT, "truncated file");
    CHECK(g == NULL);
    fp = fopen(path, "wb");
    if (fp) {
        fclose(fp);
    }
    CHECK_FAIL(rwkvc_gguf_open(path, &g), RWKVC_ERR_FORMAT, "not a GGUF file");
    unlink(path);
    CHECK_FAIL(rwkvc_gguf_open(path, &g), RWKVC_ERR_IO, "cannot open");
    CHECK_FAIL(rwkvc_gguf_open("/tmp", &g), RWKVC_ERR_IO, "not a regular file");
    CHECK_FAIL(rwkvc_gguf_open(NULL, &g), RWKVC_ERR_ARG, "NULL");
    CHECK_FAIL(rwkvc_gguf_open_memory(b.p, b.n, NULL), RWKVC_ERR_ARG, "NULL");
    CHECK(g == NULL);
    rwkvc_gguf_close(NULL);
    free(b.p);
}

/* ---- Robustness ---- */

static void test_truncations(void) {
    fspec f = {0};
    buf b = build(&f);
    for (size_t cut = 0; cut < b.n; cut++) {
        rwkvc_status st = open_copy(b.p, cut, NULL);
        if (st == RWKVC_OK) {
            fprintf(stderr, "truncation to %zu of %zu bytes was accepted\n", cut, b.n);
            failures++;
        }
    }
    CHECK(open_copy(b.p, b.n, NULL) == RWKVC_OK);
    free(b.p);
}

/* Reads everything a parsed file offers, so that a corrupt file that passes validation is still exercised. */
static void inspect_all(const rwkvc_gguf *g) {
    const uint8_t *end = g->base + g->size;
    for (size_t i = 0; i < g->n_kv; i++) {
        const rwkvc_gguf_kv *kv = &g->kv[i];
        CHECK((const uint8_t *)kv->key >= g->base && (const uint8_t *)kv->key + kv->key_len <= end);
        CHECK(kv->value >= g->base && kv->value + kv->value_bytes <= end);
        for (uint64_t j = 0; j < kv->count && j < 8; j++) {
            int64_t v;
            double d;
            const char *s;
            size_t len;
            uint64_t u;
            (void)rwkvc_gguf_kv_uint(kv, j, &u);
            if (rwkvc_gguf_kv_int(kv, j, &v) == RWKVC_OK) {
                CHECK(kv->array_type != RWKVC_META_STRING);
            }
            (void)rwkvc_gguf_kv_float(kv, j, &d);
            if (rwkvc_gguf_kv_string(kv, j, &s, &len) == RWKVC_OK) {
                CHECK((const uint8_t *)s >= g->base && (const uint8_t *)s + len <= end);
            }
        }
        if (kv->array_type == RWKVC_META_STRING && kv->type == RWKVC_META_ARRAY && kv->count < 1000) {
            const char *ptrs[1000];
            size_t lens[1000];
            CHECK(rwkvc_gguf_kv_strings(kv, ptrs, lens, (size_t)kv->count) == RWKVC_OK);
        }
        char key[80];
        size_t n = kv->key_len < 79 ? kv->key_len : 79;
        memcpy(key, kv->key, n);
        key[n] = '\0';
        CHECK(n < kv->key_len || rwkvc_gguf_find_kv(g, key) == kv);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        const rwkvc_gguf_tensor *t = &g->tensors[i];
        CHECK(t->n_dims >= 1 && t->n_dims <= 4 && t->name_len >= 1 && t->name_len <= 64);
        CHECK((const uint8_t *)t->data >= g->base + g->data_offset && (const uint8_t *)t->data + t->nbytes <= end);
        CHECK(t->nbytes == rwkvc_tensor_nbytes(t->type, t->ne) && t->nbytes > 0);
        char name[65];
        memcpy(name, t->name, t->name_len);
        name[t->name_len] = '\0';
        CHECK(rwkvc_gguf_find_tensor(g, name) == t);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_byte_flips(void) {
    fspec f = {.alignment = 32};
    buf b = build(&f);
    uint8_t *work = malloc(b.n);
    int accepted = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(work, b.p, b.n);
        int n_flips = 1 + (int)(rng() % 3);
        for (int k = 0; k < n_flips; k++) {
            /* Mostly in the header and tables: flips in tensor data are always harmless. */
            size_t at = (size_t)(rng() % (rng() % 10 ? f.data_offset : b.n));
            uint64_t r = rng();
            work[at] = (r & 0x300) == 0 ? 0xFF : (r & 0x300) == 0x100 ? 0x00 : (uint8_t)(work[at] ^ (1u << (r % 8)));
        }
        if (open_copy(work, b.n, inspect_all) == RWKVC_OK) {
            accepted++;
        }
    }
    /* Flips inside string payloads and values leave the file valid; most others break it. */
    CHECK(accepted > 0 && accepted < 4000);
    free(work);
    free(b.p);
}

/* ---- Malformed fields ---- */

/* Opens a copy of the valid file with a u32 or u64 field patched. */
static rwkvc_status open_patched(const buf *b, size_t at, uint64_t value, int width) {
    uint8_t *p = malloc(b->n);
    memcpy(p, b->p, b->n);
    if (width == 4) {
        patch_u32(p, at, (uint32_t)value);
    } else if (width == 8) {
        patch_u64(p, at, value);
    } else {
        p[at] = (uint8_t)value;
    }
    rwkvc_status st = open_copy(p, b->n, NULL);
    free(p);
    return st;
}

static void extra_dup_key(buf *b) {
    put_str(b, "t.u8");
    put_u32(b, RWKVC_META_U8);
    put_u8(b, 1);
}

static void extra_alignment_i32(buf *b) {
    put_str(b, "general.alignment");
    put_u32(b, RWKVC_META_I32);
    put_u32(b, 32);
}

static void extra_deep_array(buf *b) {
    put_str(b, "t.deep");
    put_u32(b, RWKVC_META_ARRAY);
    for (int i = 0; i < 9; i++) {
        put_u32(b, RWKVC_META_ARRAY);
        put_u64(b, 1);
    }
    put_u32(b, RWKVC_META_U8);
    put_u64(b, 0);
}

static void extra_bad_elem_type(buf *b) {
    put_str(b, "t.bad");
    put_u32(b, RWKVC_META_ARRAY);
    put_u32(b, 13);
    put_u64(b, 1);
    put_u8(b, 0);
}

static void extra_huge_u32_array(buf *b) {
    put_str(b, "t.huge");
    put_u32(b, RWKVC_META_ARRAY);
    put_u32(b, RWKVC_META_U32);
    put_u64(b, 1ull << 62);
}

static void extra_huge_string_array(buf *b) {
    put_str(b, "t.huge");
    put_u32(b, RWKVC_META_ARRAY);
    put_u32(b, RWKVC_META_STRING);
    put_u64(b, 1ull << 61);
}

static void extra_nul_key(buf *b) {
    put_strn(b, "t.n\0ul", 6);
    put_u32(b, RWKVC_META_U8);
    put_u8(b, 1);
}

static void extra_long_key(buf *b) {
    put_u64(b, 70000);
    for (int i = 0; i < 70000; i++) {
        put_u8(b, 'k');
    }
    put_u32(b, RWKVC_META_U8);
    put_u8(b, 1);
}

/* A file built from spec f with its standard kvs; returns its status. */
static rwkvc_status open_spec(fspec *f) {
    buf b = build(f);
    rwkvc_status st = open_copy(b.p, b.n, NULL);
    free(b.p);
    return st;
}

static void test_malformed(void) {
    fspec f = {.alignment = 32};
    buf b = build(&f);
    const size_t last = N_DEFAULT_TENSORS - 1;

    /* Header. */
    CHECK_FAIL(open_patched(&b, 0, 0x46554746, 4), RWKVC_ERR_FORMAT, "not a GGUF file (magic 0x46554746");
    CHECK_FAIL(open_patched(&b, 4, 1, 4), RWKVC_ERR_VERSION, "GGUF version 1 is not supported");
    CHECK_FAIL(open_patched(&b, 4, 4, 4), RWKVC_ERR_VERSION, "unsupported GGUF version 4");
    CHECK_FAIL(open_patched(&b, 4, 0x03000000, 4), RWKVC_ERR_VERSION, "big-endian");
    CHECK_FAIL(open_patched(&b, 8, 1ull << 60, 8), RWKVC_ERR_FORMAT, "tensor count 1152921504606846976 is impossible");
    CHECK_FAIL(open_patched(&b, 8, UINT64_MAX, 8), RWKVC_ERR_FORMAT, "tensor count");
    CHECK_FAIL(open_patched(&b, 16, 1ull << 60, 8), RWKVC_ERR_FORMAT,
               "metadata count 1152921504606846976 is impossible");
    /* Counts that fit the file but exceed what it holds run into the data as garbage and fail somewhere. */
    CHECK(open_patched(&b, 8, N_DEFAULT_TENSORS + 1, 8) == RWKVC_ERR_FORMAT);
    CHECK(open_patched(&b, 16, N_STANDARD_KVS + 2, 8) == RWKVC_ERR_FORMAT);

    /* Strings and metadata values. */
    CHECK_FAIL(open_patched(&b, f.m_arch_len, 1ull << 63, 8), RWKVC_ERR_FORMAT,
               "string of 9223372036854775808 bytes at byte");
    CHECK_FAIL(open_patched(&b, f.m_arch_len, 1ull << 63, 8), RWKVC_ERR_FORMAT, "runs past the end of the file");
    CHECK_FAIL(open_patched(&b, f.m_first_key_len, 1ull << 63, 8), RWKVC_ERR_FORMAT,
               "metadata key 0 has length 9223372036854775808");
    CHECK_FAIL(open_patched(&b, f.m_first_key_len, 0, 8), RWKVC_ERR_FORMAT, "metadata key 0 has length 0");
    CHECK_FAIL(open_patched(&b, f.m_bool_type, 13, 4), RWKVC_ERR_FORMAT,
               "metadata key 't.bool': unknown value type 13");
    CHECK_FAIL(open_patched(&b, f.m_bool_value, 2, 1), RWKVC_ERR_FORMAT, "bool value 2");

    fspec e = {.alignment = 32, .extra = extra_dup_key, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "duplicate metadata key 't.u8'");
    e = (fspec){.extra = extra_alignment_i32, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "general.alignment is a i32, not a u32");
    e = (fspec){.alignment = 32, .extra = extra_deep_array, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "nested deeper than 8 levels");
    e = (fspec){.alignment = 32, .extra = extra_bad_elem_type, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "unknown array element type 13");
    e = (fspec){.alignment = 32, .extra = extra_huge_u32_array, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "4611686018427387904 values of type u32");
    e = (fspec){.alignment = 32, .extra = extra_huge_string_array, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "2305843009213693952 strings");
    e = (fspec){.alignment = 32, .extra = extra_nul_key, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "contains a NUL byte");
    e = (fspec){.alignment = 32, .extra = extra_long_key, .n_extra = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "has length 70000");
    e = (fspec){.alignment = 12};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "general.alignment is 12");
    e = (fspec){.alignment = 64};
    CHECK(open_spec(&e) == RWKVC_OK);

    /* Tensor table. */
    CHECK_FAIL(open_patched(&b, f.m_ndims[0], 9, 4), RWKVC_ERR_FORMAT, "tensor a: n_dims is 9 (must be 1..4)");
    CHECK_FAIL(open_patched(&b, f.m_ndims[0], 0, 4), RWKVC_ERR_FORMAT, "n_dims is 0");
    CHECK_FAIL(open_patched(&b, f.m_ne[0], 0, 8), RWKVC_ERR_FORMAT, "tensor a: dimension 0 is 0");
    CHECK_FAIL(open_patched(&b, f.m_ne[0], 1ull << 62, 8), RWKVC_ERR_FORMAT, "tensor a: element count overflows");
    CHECK_FAIL(open_patched(&b, f.m_ne[0], UINT64_MAX, 8), RWKVC_ERR_FORMAT, "element count overflows");
    /* 2^61 F32 elements fit an int64 but their 2^63 bytes run past the file. */
    CHECK_FAIL(open_patched(&b, f.m_ne[2], 1ull << 61, 8), RWKVC_ERR_FORMAT, "runs past the end of the file");
    CHECK_FAIL(open_patched(&b, f.m_type[0], 4, 4), RWKVC_ERR_FORMAT, "tensor a: unknown type 4");
    CHECK_FAIL(open_patched(&b, f.m_type[0], 99, 4), RWKVC_ERR_FORMAT, "unknown type 99");
    CHECK_FAIL(open_patched(&b, f.m_type[0], RWKVC_TYPE_Q8_0, 4), RWKVC_ERR_FORMAT,
               "tensor a: row length ne[0] = 4 is not a multiple of the Q8_0 block size 32");
    CHECK_FAIL(open_patched(&b, f.m_offset[last], f.offsets[last] + 8, 8), RWKVC_ERR_FORMAT,
               "not a multiple of the alignment 32");
    char want[160];
    snprintf(want, sizeof(want), "tensor %s: data [offset %llu, 4 bytes] runs past the end of the file (%zu bytes)",
             DEFAULT_TENSORS[last].name, (unsigned long long)f.offsets[last] + 32, b.n);
    CHECK_FAIL(open_patched(&b, f.m_offset[last], f.offsets[last] + 32, 8), RWKVC_ERR_FORMAT, want);
    CHECK_FAIL(open_patched(&b, f.m_offset[last], 1ull << 63, 8), RWKVC_ERR_FORMAT, "runs past the end of the file");
    CHECK_FAIL(open_patched(&b, f.m_offset[last], UINT64_MAX - 31, 8), RWKVC_ERR_FORMAT, "runs past the end");
    CHECK_FAIL(open_patched(&b, f.m_offset[1], 0, 8), RWKVC_ERR_FORMAT,
               "tensor blk.0.q: data at offset 0 overlaps tensor a");
    free(b.p);

    static const tspec dup[] = {
        {"w", 1, {4, 1, 1, 1}, RWKVC_TYPE_F32},
        {"v", 1, {4, 1, 1, 1}, RWKVC_TYPE_F32},
        {"w", 1, {4, 1, 1, 1}, RWKVC_TYPE_F32},
    };
    e = (fspec){.tensors = dup, .n_tensors = 3};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "duplicate tensor name 'w'");
    static const tspec long_name[] = {
        {"x1234567890123456789012345678901234567890123456789012345678901234", 1, {4, 1, 1, 1}, RWKVC_TYPE_F32},
    };
    e = (fspec){.tensors = long_name, .n_tensors = 1};
    CHECK_FAIL(open_spec(&e), RWKVC_ERR_FORMAT, "tensor 0 name has length 65 at byte");
    /* An empty tensor table is a valid file. */
    e = (fspec){.tensors = dup, .n_tensors = 0};
    CHECK(open_spec(&e) == RWKVC_OK);
}

static void test_nbytes(void) {
    const uint64_t v[4] = {4096, 3, 1, 1};
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_F32, v) == 4096 * 3 * 4);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_F16, v) == 4096 * 3 * 2);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_BF16, v) == 4096 * 3 * 2);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q4_0, v) == 128 * 18 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q4_1, v) == 128 * 20 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q5_0, v) == 128 * 22 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q5_1, v) == 128 * 24 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q8_0, v) == 128 * 34 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q8_1, v) == 128 * 36 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q2_K, v) == 16 * 84 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q3_K, v) == 16 * 110 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q4_K, v) == 16 * 144 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q5_K, v) == 16 * 176 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q6_K, v) == 16 * 210 * 3);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q8_K, v) == 16 * 292 * 3);
    CHECK(rwkvc_tensor_nbytes(4, v) == 0);
    CHECK(rwkvc_tensor_nbytes(16, v) == 0);
    CHECK(rwkvc_tensor_nbytes(1000, v) == 0);
    const uint64_t odd[4] = {48, 1, 1, 1};
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q8_0, odd) == 0);
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_Q4_K, odd) == 0);
    const uint64_t huge[4] = {1ull << 40, 1ull << 30, 1, 1};
    CHECK(rwkvc_tensor_nbytes(RWKVC_TYPE_F32, huge) == 0);
    CHECK(rwkvc_gguf_meta_type_name(RWKVC_META_STRING)[0] == 's');
    CHECK(strcmp(rwkvc_gguf_meta_type_name(99), "unknown type") == 0);
}

/* ---- rwkvc_gguf_make_private ---- */

typedef struct {
    const uint8_t *p;
    size_t n;
    uint64_t want;
    atomic_bool stop;
    atomic_int rounds, bad;
} reader_job;

static uint64_t checksum(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i += 64) {
        h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

/* Reads the whole mapping over and over while the main thread swaps its pages: every pass must see the file. */
static void *reader_main(void *arg) {
    reader_job *j = arg;
    while (!atomic_load(&j->stop)) {
        if (checksum(j->p, j->n) != j->want) {
            atomic_fetch_add(&j->bad, 1);
        }
        atomic_fetch_add(&j->rounds, 1);
    }
    return NULL;
}

/* Whether the page at p is backed by a file (a non-zero inode in /proc/self/maps), -1 if unknown. */
static int file_backed(const void *p) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) {
        return -1;
    }
    char line[512];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, ino;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
            found = ino != 0;
            break;
        }
    }
    fclose(f);
    return found;
}

/* A file of a few huge pages: the mapping is huge-page aligned, moving ranges keeps every byte, also for a thread
   reading meanwhile, the moved pages are no longer the file's, and bad ranges are refused. */
static void test_make_private(void) {
    /* 1 MiB + 3 MiB of F32 + a 17-byte tail past the last huge page, so the last range is partial. */
    const tspec tensors[] = {
        {"small", 2, {512, 512, 1, 1}, RWKVC_TYPE_F32},
        {"big", 2, {1024, 768, 1, 1}, RWKVC_TYPE_F32},
        {"tail", 1, {4, 1, 1, 1}, RWKVC_TYPE_F32},
    };
    fspec f = {.alignment = 32, .tensors = tensors, .n_tensors = 3};
    buf b = build(&f);
    char path[] = "/tmp/test_gguf_private_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) {
        free(b.p);
        return;
    }
    CHECK(write(fd, b.p, b.n) == (ssize_t)b.n);
    close(fd);
    rwkvc_gguf *g = NULL;
    CHECK(rwkvc_gguf_open(path, &g) == RWKVC_OK);
    unlink(path);
    if (!g) {
        free(b.p);
        return;
    }
    CHECK((uintptr_t)g->base % RWKVC_HUGE_PAGE == 0);
    size_t end = g->size;
    CHECK(end > 2 * RWKVC_HUGE_PAGE && end % RWKVC_HUGE_PAGE != 0);

    CHECK_FAIL(rwkvc_gguf_make_private(g, 4096, RWKVC_HUGE_PAGE), RWKVC_ERR_ARG, "huge-page aligned");
    CHECK_FAIL(rwkvc_gguf_make_private(g, 0, RWKVC_HUGE_PAGE + 4096), RWKVC_ERR_ARG, "huge-page aligned");
    CHECK_FAIL(rwkvc_gguf_make_private(g, 0, end + RWKVC_HUGE_PAGE), RWKVC_ERR_ARG, "huge-page aligned");
    CHECK_FAIL(rwkvc_gguf_make_private(g, 0, 0), RWKVC_ERR_ARG, "huge-page aligned");

    reader_job j = {.p = g->base, .n = g->size, .want = checksum(b.p, b.n)};
    atomic_init(&j.stop, false);
    atomic_init(&j.rounds, 0);
    atomic_init(&j.bad, 0);
    pthread_t reader;
    int started = pthread_create(&reader, NULL, reader_main, &j) == 0;
    CHECK(started);
    /* Moves page by page, the last (partial) range included, waiting for the reader between moves. */
    for (size_t off = 0; off < end; off += RWKVC_HUGE_PAGE) {
        size_t len = off + RWKVC_HUGE_PAGE <= end ? RWKVC_HUGE_PAGE : end - off;
        CHECK(file_backed(g->base + off) == 1);
        int before = atomic_load(&j.rounds);
        CHECK(rwkvc_gguf_make_private(g, off, len) == RWKVC_OK);
        CHECK(file_backed(g->base + off) == 0);
        while (started && atomic_load(&j.rounds) < before + 2) {
            sched_yield();
        }
    }
    atomic_store(&j.stop, true);
    if (started) {
        pthread_join(reader, NULL);
    }
    CHECK(atomic_load(&j.bad) == 0);
    CHECK(memcmp(g->base, b.p, b.n) == 0);
    CHECK(memcmp(g->tensors[2].data, b.p + f.data_offset + f.offsets[2], 16) == 0);
    rwkvc_gguf_close(g);

    /* Only files can be moved. */
    CHECK(rwkvc_gguf_open_memory(b.p, b.n, &g) == RWKVC_OK);
    CHECK_FAIL(rwkvc_gguf_make_private(g, 0, RWKVC_HUGE_PAGE), RWKVC_ERR_ARG, "not a file mapping");
    rwkvc_gguf_close(g);
    free(b.p);
}

int main(void) {
    test_nbytes();
    test_valid(0);
    test_valid(32);
    test_valid(64);
    test_file();
    test_make_private();
    test_truncations();
    test_byte_flips();
    test_malformed();
    if (failures != 0) {
        fprintf(stderr, "test_gguf: %d failure(s)\n", failures);
        return 1;
    }
    return 0;
}
