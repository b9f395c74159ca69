/*
 * gguf.c: the validating, zero-copy GGUF v2/v3 reader declared in gguf.h.
 *
 * Layout (docs/file-formats.md §2.1), all little-endian:
 *
 *   u32 magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count,
 *   kv_count x { string key, u32 value_type, value },
 *   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset },
 *   zero padding to ALIGNMENT (absolute file position), then the data section.
 *
 * A string is a u64 byte length followed by the bytes. The reader walks the header once with a
 * bounds-checked cursor, so every read is checked against the end of the buffer before it happens,
 * and every declared count is compared with what the remaining bytes could possibly hold before
 * anything is allocated for it. Tensor data is never touched: opening a multi-gigabyte file costs
 * O(size of the header), and the tables point into the mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "status.h"

#define GGUF_MAGIC 0x46554747u           /* "GGUF" read as a little-endian u32. */
#define GGUF_HEADER_BYTES 24u            /* magic + version + tensor_count + kv_count. */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_NAME 64u                /* ggml's GGML_MAX_NAME: longest tensor name in bytes. */
#define GGUF_MAX_KEY 65535u              /* Keys are shorter than 65536 bytes (spec). */
#define GGUF_MAX_ARRAY_DEPTH 8           /* Nesting allowed for arrays of arrays. */

/* Smallest possible records, used to bound declared counts by the bytes left in the file:
   a kv is a key length (8) + at least one key byte + a value type (4) + a 1-byte value;
   a tensor is a name length (8) + at least one name byte + n_dims (4) + one ne (8) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES 14u
#define GGUF_MIN_TENSOR_BYTES 33u

/* The private object behind rwkvc_gguf: the public part first, so a pointer to one is a pointer to the other. */
typedef struct {
    rwkvc_gguf pub;
    void *map;           /* The mmap of the file (RWKVC_HUGE_PAGE-aligned), or NULL for rwkvc_gguf_open_memory. */
    size_t map_size;
    int fd;              /* The file, kept open for rwkvc_gguf_make_private; -1 for rwkvc_gguf_open_memory. */
    size_t *kv_hash;     /* [hash_cap] open-addressing table of kv index + 1 (0 = empty). */
    size_t kv_hash_cap;  /* A power of two, or 0. */
    size_t *tensor_hash; /* [tensor_hash_cap] likewise for tensors. */
    size_t tensor_hash_cap;
} gguf_impl;

/* ---- Type tables ---- */

typedef struct {
    uint32_t block_size; /* Elements per block; 0 marks an unknown type id. */
    uint32_t block_bytes;
    const char *name;
} tensor_type_info;

/* Block sizes and bytes per block of the ggml type ids (docs/quant-formats.md §1). Kept here so that the
   reader does not depend on the quantization code. Ids 4 and 5 (Q4_2, Q4_3) were removed from ggml. */
static const tensor_type_info TENSOR_TYPES[] = {
    [RWKVC_TYPE_F32] = {1, 4, "F32"},       [RWKVC_TYPE_F16] = {1, 2, "F16"},
    [RWKVC_TYPE_Q4_0] = {32, 18, "Q4_0"},   [RWKVC_TYPE_Q4_1] = {32, 20, "Q4_1"},
    [RWKVC_TYPE_Q5_0] = {32, 22, "Q5_0"},   [RWKVC_TYPE_Q5_1] = {32, 24, "Q5_1"},
    [RWKVC_TYPE_Q8_0] = {32, 34, "Q8_0"},   [RWKVC_TYPE_Q8_1] = {32, 36, "Q8_1"},
    [RWKVC_TYPE_Q2_K] = {256, 84, "Q2_K"},  [RWKVC_TYPE_Q3_K] = {256, 110, "Q3_K"},
    [RWKVC_TYPE_Q4_K] = {256, 144, "Q4_K"}, [RWKVC_TYPE_Q5_K] = {256, 176, "Q5_K"},
    [RWKVC_TYPE_Q6_K] = {256, 210, "Q6_K"}, [RWKVC_TYPE_Q8_K] = {256, 292, "Q8_K"},
    [RWKVC_TYPE_BF16] = {1, 2, "BF16"},
};

static const tensor_type_info *tensor_type(uint32_t type) {
    if (type >= sizeof(TENSOR_TYPES) / sizeof(TENSOR_TYPES[0]) || TENSOR_TYPES[type].block_size == 0) {
        return NULL;
    }
    return &TENSOR_TYPES[type];
}

/* Bytes of one element of a fixed-size metadata type; 0 for string, array and unknown types. */
static size_t meta_scalar_bytes(uint32_t type) {
    switch (type) {
    case RWKVC_META_U8: case RWKVC_META_I8: case RWKVC_META_BOOL: return 1;
    case RWKVC_META_U16: case RWKVC_META_I16: return 2;
    case RWKVC_META_U32: case RWKVC_META_I32: case RWKVC_META_F32: return 4;
    case RWKVC_META_U64: case RWKVC_META_I64: case RWKVC_META_F64: return 8;
    default: return 0;
    }
}

const char *rwkvc_gguf_meta_type_name(uint32_t type) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown type";
}

uint64_t rwkvc_tensor_nbytes(uint32_t type, const uint64_t ne[4]) {
    const tensor_type_info *t = tensor_type(type);
    if (t == NULL || ne == NULL || ne[0] % t->block_size != 0) {
        return 0;
    }
    uint64_t bytes = ne[0] / t->block_size;
    if (bytes > UINT64_MAX / t->block_bytes) {
        return 0;
    }
    bytes *= t->block_bytes;
    for (int i = 1; i < 4; i++) {
        if (ne[i] != 0 && bytes > UINT64_MAX / ne[i]) {
            return 0;
        }
        bytes *= ne[i];
    }
    return bytes;
}

/* ---- Bounds-checked reading ---- */

typedef struct {
    const uint8_t *base;
    size_t size;
    size_t pos;
} cursor;

static bool cur_has(const cursor *c, uint64_t n) {
    return n <= c->size - c->pos;
}

/* Little-endian loads; callers have checked the bounds. */
static uint16_t load_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t load_u64(const uint8_t *p) {
    return (uint64_t)load_u32(p) | ((uint64_t)load_u32(p + 4) << 32);
}

/* Copies up to 64 bytes of a name from the file into buf (>= 72 bytes) as printable ASCII, so that
   messages stay one clean line whatever bytes a corrupt file holds. */
static const char *printable(const char *s, size_t len, char *buf) {
    size_t n = len < GGUF_MAX_NAME ? len : GGUF_MAX_NAME;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > n) {
        memcpy(buf + n, "...", 4);
    } else {
        buf[n] = '\0';
    }
    return buf;
}

#define NAME_BUF 72

/* Reports a read of n bytes at the cursor that does not fit in the file. `what` says what was being read. */
static rwkvc_status truncated(const cursor *c, uint64_t n, const char *what) {
    return rwkvc_fail(RWKVC_ERR_FORMAT, "truncated file: %s needs %llu bytes at byte %zu of %zu", what,
                      (unsigned long long)n, c->pos, c->size);
}

/* Reads a string (u64 length + bytes) whose length must lie in [min_len, max_len]. */
static rwkvc_status read_string(cursor *c, const char *what, uint64_t min_len, uint64_t max_len, const char **s,
                                size_t *len) {
    if (!cur_has(c, 8)) {
        return truncated(c, 8, what);
    }
    uint64_t n = load_u64(c->base + c->pos);
    if (n < min_len || n > max_len) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "%s has length %llu at byte %zu (allowed %llu..%llu)", what,
                          (unsigned long long)n, c->pos, (unsigned long long)min_len, (unsigned long long)max_len);
    }
    c->pos += 8;
    if (!cur_has(c, n)) {
        return rwkvc_fail(RWKVC_ERR_FORMAT,
                          "%s: string of %llu bytes at byte %zu runs past the end of the file (%zu bytes)",
                          what, (unsigned long long)n, c->pos, c->size);
    }
    *s = (const char *)(c->base + c->pos);
    *len = (size_t)n;
    c->pos += (size_t)n;
    return RWKVC_OK;
}

/* ---- Metadata values ---- */

/*
 * Validates `count` elements of `type` at the cursor and advances past them. depth counts enclosing arrays.
 * Strings may hold any bytes (token texts need not be UTF-8); bools must be 0 or 1.
 */
static rwkvc_status skip_values(cursor *c, const char *key, uint32_t type, uint64_t count, int depth) {
    size_t elem = meta_scalar_bytes(type);
    if (elem != 0) {
        if (count > (c->size - c->pos) / elem) {
            return rwkvc_fail(RWKVC_ERR_FORMAT,
                              "metadata key '%s': %llu values of type %s at byte %zu run past the end of the file "
                              "(%zu bytes)",
                              key, (unsigned long long)count, rwkvc_gguf_meta_type_name(type), c->pos, c->size);
        }
        if (type == RWKVC_META_BOOL) {
            for (uint64_t i = 0; i < count; i++) {
                if (c->base[c->pos + i] > 1) {
                    return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key '%s': bool value %u at byte %zu is not 0 or 1",
                                      key, c->base[c->pos + i], c->pos + (size_t)i);
                }
            }
        }
        c->pos += (size_t)(count * elem);
        return RWKVC_OK;
    }
    if (type == RWKVC_META_STRING) {
        /* Each string takes at least its 8-byte length, which bounds the count before the walk. */
        if (count > (c->size - c->pos) / 8) {
            return rwkvc_fail(RWKVC_ERR_FORMAT,
                              "metadata key '%s': %llu strings at byte %zu cannot fit in the file (%zu bytes)", key,
                              (unsigned long long)count, c->pos, c->size);
        }
        for (uint64_t i = 0; i < count; i++) {
            const char *s;
            size_t len;
            char what[NAME_BUF + 64];
            snprintf(what, sizeof(what), "metadata key '%s' string %llu", key, (unsigned long long)i);
            rwkvc_status st = read_string(c, what, 0, UINT64_MAX, &s, &len);
            if (st != RWKVC_OK) {
                return st;
            }
        }
        return RWKVC_OK;
    }
    if (type == RWKVC_META_ARRAY) {
        if (depth >= GGUF_MAX_ARRAY_DEPTH) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key '%s': arrays nested deeper than %d levels at byte %zu",
                              key, GGUF_MAX_ARRAY_DEPTH, c->pos);
        }
        /* Each nested array takes at least its 4-byte type and 8-byte count. */
        if (count > (c->size - c->pos) / 12) {
            return rwkvc_fail(RWKVC_ERR_FORMAT,
                              "metadata key '%s': %llu nested arrays at byte %zu cannot fit in the file (%zu bytes)",
                              key, (unsigned long long)count, c->pos, c->size);
        }
        for (uint64_t i = 0; i < count; i++) {
            uint32_t sub_type = load_u32(c->base + c->pos);
            uint64_t sub_count = load_u64(c->base + c->pos + 4);
            if (meta_scalar_bytes(sub_type) == 0 && sub_type != RWKVC_META_STRING && sub_type != RWKVC_META_ARRAY) {
                return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key '%s': unknown array element type %u at byte %zu",
                                  key, sub_type, c->pos);
            }
            c->pos += 12;
            rwkvc_status st = skip_values(c, key, sub_type, sub_count, depth + 1);
            if (st != RWKVC_OK) {
                return st;
            }
            /* The bound above assumed 12 bytes per element; later elements must still fit. */
            if (i + 1 < count && !cur_has(c, 12)) {
                return truncated(c, 12, "nested array header");
            }
        }
        return RWKVC_OK;
    }
    return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key '%s': unknown value type %u at byte %zu", key, type, c->pos);
}

/* Parses one kv record at the cursor into kv. index is its position in the table, for messages. */
static rwkvc_status read_kv(cursor *c, uint64_t index, rwkvc_gguf_kv *kv) {
    char what[64];
    snprintf(what, sizeof(what), "metadata key %llu", (unsigned long long)index);
    rwkvc_status st = read_string(c, what, 1, GGUF_MAX_KEY, &kv->key, &kv->key_len);
    if (st != RWKVC_OK) {
        return st;
    }
    char key[NAME_BUF];
    printable(kv->key, kv->key_len, key);
    if (memchr(kv->key, '\0', kv->key_len) != NULL) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key %llu ('%s') contains a NUL byte", (unsigned long long)index,
                          key);
    }
    if (!cur_has(c, 4)) {
        return truncated(c, 4, "metadata value type");
    }
    uint32_t type = load_u32(c->base + c->pos);
    c->pos += 4;
    kv->type = type;
    kv->array_type = type;
    kv->count = 1;
    if (type == RWKVC_META_ARRAY) {
        if (!cur_has(c, 12)) {
            return truncated(c, 12, "metadata array header");
        }
        kv->array_type = load_u32(c->base + c->pos);
        kv->count = load_u64(c->base + c->pos + 4);
        c->pos += 12;
        if (meta_scalar_bytes(kv->array_type) == 0 && kv->array_type != RWKVC_META_STRING &&
            kv->array_type != RWKVC_META_ARRAY) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "metadata key '%s': unknown array element type %u", key,
                              kv->array_type);
        }
    }
    kv->value = c->base + c->pos;
    size_t start = c->pos;
    st = skip_values(c, key, kv->array_type, kv->count, type == RWKVC_META_ARRAY ? 1 : 0);
    if (st != RWKVC_OK) {
        return st;
    }
    kv->value_bytes = c->pos - start;
    return RWKVC_OK;
}

/* ---- Name tables ---- */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    }
    return h;
}

/* Returns the slot holding name, or the empty slot where it belongs. names(i) gives entry i's name. */
typedef void (*name_of_fn)(const rwkvc_gguf *g, size_t i, const char **s, size_t *len);

static size_t hash_slot(const rwkvc_gguf *g, const size_t *table, size_t cap, name_of_fn name_of, const char *s,
                        size_t len) {
    size_t mask = cap - 1;
    size_t slot = (size_t)hash_bytes(s, len) & mask;
    for (;;) {
        size_t e = table[slot];
        if (e == 0) {
            return slot;
        }
        const char *es;
        size_t elen;
        name_of(g, e - 1, &es, &elen);
        if (elen == len && memcmp(es, s, len) == 0) {
            return slot;
        }
        slot = (slot + 1) & mask;
    }
}

static void kv_name(const rwkvc_gguf *g, size_t i, const char **s, size_t *len) {
    *s = g->kv[i].key;
    *len = g->kv[i].key_len;
}

static void tensor_name(const rwkvc_gguf *g, size_t i, const char **s, size_t *len) {
    *s = g->tensors[i].name;
    *len = g->tensors[i].name_len;
}

/* Builds a table over n entries; sets *dup to the first duplicate's index (or n). NULL if out of memory. */
static size_t *build_hash(const rwkvc_gguf *g, size_t n, name_of_fn name_of, size_t *cap_out, size_t *dup) {
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    size_t *table = calloc(cap, sizeof(size_t));
    if (table == NULL) {
        return NULL;
    }
    *dup = n;
    for (size_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        name_of(g, i, &s, &len);
        size_t slot = hash_slot(g, table, cap, name_of, s, len);
        if (table[slot] != 0) {
            *dup = i;
            break;
        }
        table[slot] = i + 1;
    }
    *cap_out = cap;
    return table;
}

/* ---- Tensor table ---- */

static rwkvc_status read_tensor(cursor *c, uint64_t index, uint64_t alignment, rwkvc_gguf_tensor *t,
                                uint64_t *offset) {
    char what[64];
    snprintf(what, sizeof(what), "tensor %llu name", (unsigned long long)index);
    rwkvc_status st = read_string(c, what, 1, GGUF_MAX_NAME, &t->name, &t->name_len);
    if (st != RWKVC_OK) {
        return st;
    }
    char name[NAME_BUF];
    printable(t->name, t->name_len, name);
    if (memchr(t->name, '\0', t->name_len) != NULL) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %llu ('%s'): name contains a NUL byte", (unsigned long long)index,
                          name);
    }
    if (!cur_has(c, 4)) {
        return truncated(c, 4, "tensor n_dims");
    }
    t->n_dims = load_u32(c->base + c->pos);
    c->pos += 4;
    if (t->n_dims < 1 || t->n_dims > 4) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: n_dims is %u (must be 1..4)", name, t->n_dims);
    }
    if (!cur_has(c, 8ull * t->n_dims + 12)) {
        return truncated(c, 8ull * t->n_dims + 12, "tensor shape, type and offset");
    }
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims) {
            t->ne[d] = load_u64(c->base + c->pos);
            c->pos += 8;
        }
        if (t->ne[d] == 0) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: dimension %u is 0", name, d);
        }
        /* ggml keeps ne as int64, so the element count must fit in one. */
        if (t->ne[d] > (uint64_t)INT64_MAX / n_elements) {
            return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: element count overflows (ne[%u] = %llu)", name, d,
                              (unsigned long long)t->ne[d]);
        }
        n_elements *= t->ne[d];
    }
    t->type = load_u32(c->base + c->pos);
    *offset = load_u64(c->base + c->pos + 4);
    c->pos += 12;
    const tensor_type_info *ti = tensor_type(t->type);
    if (ti == NULL) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: unknown type %u", name, t->type);
    }
    if (t->ne[0] % ti->block_size != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT,
                          "tensor %s: row length ne[0] = %llu is not a multiple of the %s block size %u",
                          name, (unsigned long long)t->ne[0], ti->name, ti->block_size);
    }
    t->nbytes = rwkvc_tensor_nbytes(t->type, t->ne);
    if (t->nbytes == 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: byte size overflows", name);
    }
    if (*offset % alignment != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: offset %llu is not a multiple of the alignment %llu", name,
                          (unsigned long long)*offset, (unsigned long long)alignment);
    }
    return RWKVC_OK;
}

typedef struct {
    uint64_t offset;
    uint64_t end;
    size_t index;
} tensor_span;

static int compare_spans(const void *a, const void *b) {
    const tensor_span *x = a, *y = b;
    /* Ties are broken by index so that the message names the later tensor as the one that overlaps. */
    if (x->offset != y->offset) {
        return x->offset < y->offset ? -1 : 1;
    }
    return x->index < y->index ? -1 : x->index > y->index ? 1 : 0;
}

/* Refuses tensors whose data overlap: ggml writes them back to back, so an overlap means a corrupt table. */
static rwkvc_status check_overlaps(const rwkvc_gguf *g, const uint64_t *offsets) {
    if (g->n_tensors < 2) {
        return RWKVC_OK;
    }
    tensor_span *spans = malloc(g->n_tensors * sizeof(tensor_span));
    if (spans == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory checking %llu tensors", (unsigned long long)g->n_tensors);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        spans[i] = (tensor_span){offsets[i], offsets[i] + g->tensors[i].nbytes, i};
    }
    qsort(spans, g->n_tensors, sizeof(tensor_span), compare_spans);
    rwkvc_status st = RWKVC_OK;
    for (size_t i = 1; i < g->n_tensors; i++) {
        if (spans[i].offset < spans[i - 1].end) {
            const rwkvc_gguf_tensor *a = &g->tensors[spans[i - 1].index], *b = &g->tensors[spans[i].index];
            char na[NAME_BUF], nb[NAME_BUF];
            st = rwkvc_fail(RWKVC_ERR_FORMAT,
                            "tensor %s: data at offset %llu overlaps tensor %s [offset %llu, %llu bytes]",
                            printable(b->name, b->name_len, nb), (unsigned long long)spans[i].offset,
                            printable(a->name, a->name_len, na), (unsigned long long)spans[i - 1].offset,
                            (unsigned long long)a->nbytes);
            break;
        }
    }
    free(spans);
    return st;
}

/* ---- Whole file ---- */

static void impl_free(gguf_impl *impl) {
    if (impl == NULL) {
        return;
    }
    free(impl->pub.kv);
    free(impl->pub.tensors);
    free(impl->kv_hash);
    free(impl->tensor_hash);
    if (impl->map != NULL) {
        munmap(impl->map, impl->map_size);
    }
    if (impl->fd >= 0) {
        close(impl->fd);
    }
    free(impl);
}

/* Grows *arr (of elem-byte entries) to hold at least need entries, doubling, so that memory follows what was
   actually parsed rather than a declared count. */
static bool grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) {
        return true;
    }
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need) {
        n *= 2;
    }
    void *p = realloc(*arr, n * elem);
    if (p == NULL) {
        return false;
    }
    *arr = p;
    *cap = n;
    return true;
}

static rwkvc_status parse_kvs(gguf_impl *impl, cursor *c) {
    rwkvc_gguf *g = &impl->pub;
    size_t cap = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (!grow((void **)&g->kv, &cap, (size_t)i + 1, sizeof(rwkvc_gguf_kv))) {
            return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory reading metadata");
        }
        rwkvc_status st = read_kv(c, i, &g->kv[i]);
        if (st != RWKVC_OK) {
            return st;
        }
    }
    size_t dup;
    impl->kv_hash = build_hash(g, (size_t)g->n_kv, kv_name, &impl->kv_hash_cap, &dup);
    if (impl->kv_hash == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory indexing metadata");
    }
    if (dup < g->n_kv) {
        char key[NAME_BUF];
        return rwkvc_fail(RWKVC_ERR_FORMAT, "duplicate metadata key '%s'",
                          printable(g->kv[dup].key, g->kv[dup].key_len, key));
    }
    return RWKVC_OK;
}

/* Reads general.alignment (u32, non-zero, a multiple of 8) into g->alignment, or leaves the default. */
static rwkvc_status read_alignment(rwkvc_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(g, "general.alignment");
    if (kv == NULL) {
        return RWKVC_OK;
    }
    if (kv->type != RWKVC_META_U32) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "general.alignment is a %s, not a u32",
                          rwkvc_gguf_meta_type_name(kv->type));
    }
    uint32_t a = load_u32(kv->value);
    if (a == 0 || a % 8 != 0) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "general.alignment is %u (must be a non-zero multiple of 8)", a);
    }
    g->alignment = a;
    return RWKVC_OK;
}

static rwkvc_status parse_tensors(gguf_impl *impl, cursor *c) {
    rwkvc_gguf *g = &impl->pub;
    size_t cap = 0, offsets_cap = 0;
    uint64_t *offsets = NULL;
    rwkvc_status st = RWKVC_OK;
    for (uint64_t i = 0; i < g->n_tensors && st == RWKVC_OK; i++) {
        if (!grow((void **)&g->tensors, &cap, (size_t)i + 1, sizeof(rwkvc_gguf_tensor)) ||
            !grow((void **)&offsets, &offsets_cap, (size_t)i + 1, sizeof(uint64_t))) {
            st = rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory reading the tensor table");
            break;
        }
        st = read_tensor(c, i, g->alignment, &g->tensors[i], &offsets[i]);
    }
    if (st != RWKVC_OK) {
        free(offsets);
        return st;
    }

    /* The data section starts at the next multiple of the alignment (absolute position). A file without
       tensors may end right after its table. */
    uint64_t table_end = c->pos;
    uint64_t data_offset = (table_end + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_tensors > 0 && data_offset > c->size) {
        free(offsets);
        return rwkvc_fail(RWKVC_ERR_FORMAT, "truncated file: data section starts at byte %llu of %zu",
                          (unsigned long long)data_offset, c->size);
    }
    g->data_offset = data_offset < c->size ? data_offset : c->size;
    uint64_t data_size = c->size - g->data_offset;

    for (size_t i = 0; i < g->n_tensors && st == RWKVC_OK; i++) {
        rwkvc_gguf_tensor *t = &g->tensors[i];
        if (offsets[i] > data_size || t->nbytes > data_size - offsets[i]) {
            char name[NAME_BUF];
            st = rwkvc_fail(RWKVC_ERR_FORMAT,
                            "tensor %s: data [offset %llu, %llu bytes] runs past the end of the file (%zu bytes)",
                            printable(t->name, t->name_len, name), (unsigned long long)offsets[i],
                            (unsigned long long)t->nbytes, c->size);
            break;
        }
        t->data = c->base + g->data_offset + offsets[i];
    }
    if (st == RWKVC_OK) {
        st = check_overlaps(g, offsets);
    }
    free(offsets);
    if (st != RWKVC_OK) {
        return st;
    }

    size_t dup;
    impl->tensor_hash = build_hash(g, (size_t)g->n_tensors, tensor_name, &impl->tensor_hash_cap, &dup);
    if (impl->tensor_hash == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory indexing tensors");
    }
    if (dup < g->n_tensors) {
        char name[NAME_BUF];
        return rwkvc_fail(RWKVC_ERR_FORMAT, "duplicate tensor name '%s'",
                          printable(g->tensors[dup].name, g->tensors[dup].name_len, name));
    }
    return RWKVC_OK;
}

static rwkvc_status parse(gguf_impl *impl) {
    rwkvc_gguf *g = &impl->pub;
    cursor c = {g->base, g->size, 0};
    if (c.size < 4) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "not a GGUF file (%zu bytes, shorter than the magic)", c.size);
    }
    uint32_t magic = load_u32(c.base);
    if (magic != GGUF_MAGIC) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "not a GGUF file (magic 0x%08x, expected 0x%08x \"GGUF\")", magic,
                          GGUF_MAGIC);
    }
    if (c.size < GGUF_HEADER_BYTES) {
        return rwkvc_fail(RWKVC_ERR_FORMAT, "truncated file: %zu bytes, shorter than the %u-byte GGUF header", c.size,
                          GGUF_HEADER_BYTES);
    }
    g->version = load_u32(c.base + 4);
    if (g->version == 1) {
        return rwkvc_fail(RWKVC_ERR_VERSION,
                          "GGUF version 1 is not supported (it used 32-bit counts); convert the model again");
    }
    if (g->version != 2 && g->version != 3) {
        return rwkvc_fail(RWKVC_ERR_VERSION, "unsupported GGUF version %u (this reader knows 2 and 3%s)", g->version,
                          g->version != 0 && (g->version & 0xFFFFu) == 0 ? "; a big-endian file?" : "");
    }
    g->n_tensors = load_u64(c.base + 8);
    g->n_kv = load_u64(c.base + 16);
    c.pos = GGUF_HEADER_BYTES;

    /* Bound both counts by the bytes left before allocating anything. */
    uint64_t left = c.size - c.pos;
    if (g->n_kv > left / GGUF_MIN_KV_BYTES) {
        return rwkvc_fail(RWKVC_ERR_FORMAT,
                          "metadata count %llu is impossible: the %llu bytes after the header can hold at most %llu "
                          "entries (truncated or corrupt file)",
                          (unsigned long long)g->n_kv, (unsigned long long)left,
                          (unsigned long long)(left / GGUF_MIN_KV_BYTES));
    }
    if (g->n_tensors > left / GGUF_MIN_TENSOR_BYTES ||
        g->n_kv * GGUF_MIN_KV_BYTES + g->n_tensors * GGUF_MIN_TENSOR_BYTES > left) {
        return rwkvc_fail(RWKVC_ERR_FORMAT,
                          "tensor count %llu is impossible: the %llu bytes after the header can hold at most %llu "
                          "tensors (truncated or corrupt file)",
                          (unsigned long long)g->n_tensors, (unsigned long long)left,
                          (unsigned long long)((left - g->n_kv * GGUF_MIN_KV_BYTES) / GGUF_MIN_TENSOR_BYTES));
    }

    rwkvc_status st = parse_kvs(impl, &c);
    if (st == RWKVC_OK) {
        st = read_alignment(g);
    }
    if (st == RWKVC_OK) {
        st = parse_tensors(impl, &c);
    }
    return st;
}

/* Parses base[0..size) into a new object; map (may be NULL) is unmapped and fd (may be -1) closed by close. */
static rwkvc_status open_buffer(const void *base, size_t size, void *map, size_t map_size, int fd, rwkvc_gguf **out) {
    gguf_impl *impl = calloc(1, sizeof(gguf_impl));
    if (impl == NULL) {
        if (map != NULL) {
            munmap(map, map_size);
        }
        if (fd >= 0) {
            close(fd);
        }
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory opening a GGUF file");
    }
    impl->map = map;
    impl->map_size = map_size;
    impl->fd = fd;
    impl->pub.base = base;
    impl->pub.size = size;
    rwkvc_status st = parse(impl);
    if (st != RWKVC_OK) {
        impl_free(impl);
        return st;
    }
    *out = &impl->pub;
    return RWKVC_OK;
}

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

static size_t round_up(size_t x, size_t to) {
    return (x + to - 1) / to * to;
}

/* span bytes (a page multiple) of fresh private anonymous memory with protection prot, starting on a
   RWKVC_HUGE_PAGE boundary: one huge page more is reserved and the slack on both sides unmapped. NULL with errno
   set on failure. */
static uint8_t *map_anon_aligned(size_t span, int prot, int extra_flags) {
    uint8_t *raw = mmap(NULL, span + RWKVC_HUGE_PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    if (raw == MAP_FAILED) {
        return NULL;
    }
    uint8_t *at = (uint8_t *)round_up((uintptr_t)raw, RWKVC_HUGE_PAGE);
    if (at > raw) {
        munmap(raw, (size_t)(at - raw));
    }
    size_t tail = (size_t)(raw + RWKVC_HUGE_PAGE - at);
    if (tail > 0) {
        munmap(at + span, tail);
    }
    return at;
}

/* Maps size bytes of fd read-only at an address that is a multiple of RWKVC_HUGE_PAGE (so that parts of it can
   later be replaced by huge pages of private memory), over an aligned reservation of address space. NULL with
   errno set on failure. */
static void *map_aligned(int fd, size_t size) {
    size_t span = round_up(size, page_size());
    uint8_t *at = map_anon_aligned(span, PROT_NONE, MAP_NORESERVE);
    if (at == NULL) {
        return NULL;
    }
    void *map = mmap(at, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        munmap(at, span);
        errno = e;
        return NULL;
    }
    return map;
}

rwkvc_status rwkvc_gguf_open_memory(const void *data, size_t size, rwkvc_gguf **out) {
    if ((data == NULL && size != 0) || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_gguf_open_memory: NULL argument");
    }
    /* A NULL empty buffer is still parsed (and refused) like any short file. */
    static const uint8_t empty[1];
    return open_buffer(data != NULL ? data : empty, size, NULL, 0, -1, out);
}

rwkvc_status rwkvc_gguf_open(const char *path, rwkvc_gguf **out) {
    if (path == NULL || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_gguf_open: NULL argument");
    }
    /* O_NONBLOCK so that a FIFO path fails the regular-file check below instead of blocking here;
       it changes nothing for regular files. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return rwkvc_fail(RWKVC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return rwkvc_fail(RWKVC_ERR_IO, "cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return rwkvc_fail(RWKVC_ERR_IO, "%s is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return rwkvc_fail(RWKVC_ERR_IO, "%s is too large to map (%lld bytes)", path, (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    if (size < GGUF_HEADER_BYTES) {
        /* mmap refuses empty files; read the few bytes there are so the message names the real problem. */
        uint8_t head[GGUF_HEADER_BYTES];
        ssize_t got = pread(fd, head, size, 0);
        close(fd);
        if (got < 0 || (size_t)got != size) {
            return rwkvc_fail(RWKVC_ERR_IO, "cannot read %s", path);
        }
        rwkvc_gguf *g = NULL;
        rwkvc_status st = rwkvc_gguf_open_memory(head, size, &g);
        rwkvc_gguf_close(g); /* Unreachable in practice: no valid file is this short. */
        return st != RWKVC_OK ? st : rwkvc_fail(RWKVC_ERR_FORMAT, "%s: file too short", path);
    }
    void *map = map_aligned(fd, size);
    if (map == NULL) {
        int e = errno;
        close(fd);
        return rwkvc_fail(RWKVC_ERR_IO, "cannot map %s: %s", path, strerror(e));
    }
    return open_buffer(map, size, map, size, fd, out);
}

rwkvc_status rwkvc_gguf_make_private(rwkvc_gguf *g, size_t off, size_t len) {
    gguf_impl *impl = (gguf_impl *)g;
    if (g == NULL || impl->map == NULL || impl->fd < 0) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_gguf_make_private: not a file mapping");
    }
    size_t end = round_up(impl->map_size, page_size());
    if (off % RWKVC_HUGE_PAGE != 0 || len == 0 || off > end || len > end - off ||
        (len % RWKVC_HUGE_PAGE != 0 && off + len < impl->map_size)) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_gguf_make_private: range [%zu, +%zu) is not huge-page aligned "
                          "inside the %zu-byte mapping", off, len, end);
    }
#if defined(MREMAP_FIXED)
    /* Private memory starting on a huge-page boundary, like the target range, so that mremap can move whole
       huge pages (PMD entries) instead of splitting them. */
    size_t span = round_up(len, page_size());
    uint8_t *copy = map_anon_aligned(span, PROT_READ | PROT_WRITE, 0);
    if (copy == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "cannot allocate %zu bytes for the weights: %s", span, strerror(errno));
    }
#if defined(MADV_HUGEPAGE)
    madvise(copy, span, MADV_HUGEPAGE); /* Advice only: without transparent huge pages the copy still works. */
#endif
    /* pread, not a copy from the mapping, so that the file pages are not mapped (and counted in RSS) on the way. */
    size_t done = 0;
    size_t file_bytes = off + len <= impl->map_size ? len : impl->map_size - off;
    while (done < file_bytes) {
        ssize_t got = pread(impl->fd, copy + done, file_bytes - done, (off_t)(off + done));
        if (got <= 0) {
            int e = got < 0 ? errno : EIO;
            munmap(copy, span);
            return rwkvc_fail(RWKVC_ERR_IO, "cannot read the weights back from the file: %s", strerror(e));
        }
        done += (size_t)got;
    }
    mprotect(copy, span, PROT_READ);
    /* mremap swaps the pages under the address-space lock: a thread reading the range meanwhile sees either the
       file pages or the copy, which hold the same bytes, never a hole. */
    uint8_t *target = (uint8_t *)impl->map + off;
    if (mremap(copy, span, span, MREMAP_MAYMOVE | MREMAP_FIXED, target) == MAP_FAILED) {
        int e = errno;
        munmap(copy, span);
        /* The kernel may have unmapped the target before failing: map the file there again. */
        if (mmap(target, span, PROT_READ, MAP_PRIVATE | MAP_FIXED, impl->fd, (off_t)off) == MAP_FAILED) {
            return rwkvc_fail(RWKVC_ERR_NOMEM, "lost the mapping of the weights: %s", strerror(errno));
        }
        return rwkvc_fail(RWKVC_ERR_NOMEM, "cannot move the weights into private memory: %s", strerror(e));
    }
    return RWKVC_OK;
#else
    return rwkvc_fail(RWKVC_ERR_BACKEND, "this system cannot move mapped pages (no mremap)");
#endif
}

void rwkvc_gguf_close(rwkvc_gguf *g) {
    impl_free((gguf_impl *)g);
}

/* ---- Lookups ---- */

const rwkvc_gguf_kv *rwkvc_gguf_find_kv(const rwkvc_gguf *g, const char *key) {
    const gguf_impl *impl = (const gguf_impl *)g;
    if (g == NULL || key == NULL || impl->kv_hash_cap == 0) {
        return NULL;
    }
    size_t slot = hash_slot(g, impl->kv_hash, impl->kv_hash_cap, kv_name, key, strlen(key));
    size_t e = impl->kv_hash[slot];
    return e != 0 ? &g->kv[e - 1] : NULL;
}

const rwkvc_gguf_tensor *rwkvc_gguf_find_tensor(const rwkvc_gguf *g, const char *name) {
    const gguf_impl *impl = (const gguf_impl *)g;
    if (g == NULL || name == NULL || impl->tensor_hash_cap == 0) {
        return NULL;
    }
    size_t slot = hash_slot(g, impl->tensor_hash, impl->tensor_hash_cap, tensor_name, name, strlen(name));
    size_t e = impl->tensor_hash[slot];
    return e != 0 ? &g->tensors[e - 1] : NULL;
}

rwkvc_status rwkvc_gguf_get_kv(const rwkvc_gguf *g, const char *key, const rwkvc_gguf_kv **out) {
    if (g == NULL || key == NULL || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata lookup: NULL argument");
    }
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(g, key);
    if (kv == NULL) {
        char k[NAME_BUF];
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s' not found", printable(key, strlen(key), k));
    }
    *out = kv;
    return RWKVC_OK;
}

/* Describes kv's type for messages: "u32" or "array of string". */
static const char *kv_type_desc(const rwkvc_gguf_kv *kv, char *buf, size_t n) {
    if (kv->type == RWKVC_META_ARRAY) {
        snprintf(buf, n, "array of %s", rwkvc_gguf_meta_type_name(kv->array_type));
    } else {
        snprintf(buf, n, "%s", rwkvc_gguf_meta_type_name(kv->type));
    }
    return buf;
}

/* Checks the element type against `ok` and the index against the count. */
static rwkvc_status check_element(const rwkvc_gguf_kv *kv, uint64_t index, bool ok, const char *wanted) {
    char key[NAME_BUF], desc[32];
    if (!ok) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s' is %s %s, not %s", printable(kv->key, kv->key_len, key),
                          kv->type == RWKVC_META_ARRAY ? "an" : "a", kv_type_desc(kv, desc, sizeof(desc)), wanted);
    }
    if (index >= kv->count) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s': index %llu out of range (%llu element%s)",
                          printable(kv->key, kv->key_len, key), (unsigned long long)index,
                          (unsigned long long)kv->count, kv->count == 1 ? "" : "s");
    }
    return RWKVC_OK;
}

static bool is_integer_type(uint32_t t) {
    return t <= RWKVC_META_I32 || t == RWKVC_META_BOOL || t == RWKVC_META_U64 || t == RWKVC_META_I64;
}

rwkvc_status rwkvc_gguf_kv_int(const rwkvc_gguf_kv *kv, uint64_t index, int64_t *out) {
    if (kv == NULL || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata read: NULL argument");
    }
    rwkvc_status st = check_element(kv, index, is_integer_type(kv->array_type), "an integer");
    if (st != RWKVC_OK) {
        return st;
    }
    const uint8_t *p = kv->value + index * meta_scalar_bytes(kv->array_type);
    switch (kv->array_type) {
    case RWKVC_META_U8: case RWKVC_META_BOOL: *out = p[0]; break;
    case RWKVC_META_I8: *out = (int8_t)p[0]; break;
    case RWKVC_META_U16: *out = load_u16(p); break;
    case RWKVC_META_I16: *out = (int16_t)load_u16(p); break;
    case RWKVC_META_U32: *out = load_u32(p); break;
    case RWKVC_META_I32: *out = (int32_t)load_u32(p); break;
    case RWKVC_META_I64: *out = (int64_t)load_u64(p); break;
    default: { /* U64 */
        uint64_t v = load_u64(p);
        if (v > (uint64_t)INT64_MAX) {
            char key[NAME_BUF];
            return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s': value %llu does not fit in an int64",
                              printable(kv->key, kv->key_len, key), (unsigned long long)v);
        }
        *out = (int64_t)v;
        break;
    }
    }
    return RWKVC_OK;
}

rwkvc_status rwkvc_gguf_kv_uint(const rwkvc_gguf_kv *kv, uint64_t index, uint64_t *out) {
    if (kv == NULL || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata read: NULL argument");
    }
    if (kv->array_type == RWKVC_META_U64) {
        rwkvc_status st = check_element(kv, index, true, "an integer");
        if (st == RWKVC_OK) {
            *out = load_u64(kv->value + index * 8);
        }
        return st;
    }
    int64_t v = 0;
    rwkvc_status st = rwkvc_gguf_kv_int(kv, index, &v);
    if (st != RWKVC_OK) {
        return st;
    }
    if (v < 0) {
        char key[NAME_BUF];
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s': value %lld is negative",
                          printable(kv->key, kv->key_len, key), (long long)v);
    }
    *out = (uint64_t)v;
    return RWKVC_OK;
}

rwkvc_status rwkvc_gguf_kv_float(const rwkvc_gguf_kv *kv, uint64_t index, double *out) {
    if (kv == NULL || out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata read: NULL argument");
    }
    uint32_t t = kv->array_type;
    bool numeric = t == RWKVC_META_F32 || t == RWKVC_META_F64 || (is_integer_type(t) && t != RWKVC_META_BOOL);
    rwkvc_status st = check_element(kv, index, numeric, "a number");
    if (st != RWKVC_OK) {
        return st;
    }
    const uint8_t *p = kv->value + index * meta_scalar_bytes(t);
    if (t == RWKVC_META_F32) {
        uint32_t bits = load_u32(p);
        float f;
        memcpy(&f, &bits, sizeof(f));
        *out = f;
    } else if (t == RWKVC_META_F64) {
        uint64_t bits = load_u64(p);
        memcpy(out, &bits, sizeof(*out));
    } else if (t == RWKVC_META_U64) {
        *out = (double)load_u64(p);
    } else {
        int64_t v = 0;
        st = rwkvc_gguf_kv_int(kv, index, &v);
        if (st != RWKVC_OK) {
            return st;
        }
        *out = (double)v;
    }
    return RWKVC_OK;
}

rwkvc_status rwkvc_gguf_kv_string(const rwkvc_gguf_kv *kv, uint64_t index, const char **s, size_t *len) {
    if (kv == NULL || s == NULL || len == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata read: NULL argument");
    }
    rwkvc_status st = check_element(kv, index, kv->array_type == RWKVC_META_STRING, "a string");
    if (st != RWKVC_OK) {
        return st;
    }
    /* Strings have varying lengths, so element `index` is found by walking the (validated) lengths. */
    const uint8_t *p = kv->value;
    for (uint64_t i = 0; i < index; i++) {
        p += 8 + (size_t)load_u64(p);
    }
    *len = (size_t)load_u64(p);
    *s = (const char *)(p + 8);
    return RWKVC_OK;
}

rwkvc_status rwkvc_gguf_kv_strings(const rwkvc_gguf_kv *kv, const char **ptrs, size_t *lens, size_t count) {
    if (kv == NULL || ((ptrs == NULL || lens == NULL) && count != 0)) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata read: NULL argument");
    }
    char key[NAME_BUF], desc[32];
    if (kv->type != RWKVC_META_ARRAY || kv->array_type != RWKVC_META_STRING) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata key '%s' is %s %s, not an array of string",
                          printable(kv->key, kv->key_len, key), kv->type == RWKVC_META_ARRAY ? "an" : "a",
                          kv_type_desc(kv, desc, sizeof(desc)));
    }
    if (count != kv->count) {
        return rwkvc_fail(RWKVC_ERR_SIZE, "metadata key '%s' has %llu strings, the caller's arrays %zu",
                          printable(kv->key, kv->key_len, key), (unsigned long long)kv->count, count);
    }
    const uint8_t *p = kv->value;
    for (size_t i = 0; i < count; i++) {
        lens[i] = (size_t)load_u64(p);
        ptrs[i] = (const char *)(p + 8);
        p += 8 + lens[i];
    }
    return RWKVC_OK;
}
