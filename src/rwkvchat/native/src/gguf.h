/*
 * gguf.h: a validating, zero-copy GGUF v2/v3 reader over mmap.
 *
 * rwkvc_gguf_open maps the file read-only (at a huge-page-aligned address) and checks the whole container before returning: magic,
 * version (2 or 3), counts against the file size, every string length, every metadata value and
 * array, every tensor's dims (1..4, each >= 1), type (known to this library), byte size (overflow
 * checked) and data range against the file size. It never reads past the end of the mapping, and
 * refuses absurd declared counts before allocating for them.
 * Architecture-level checks (which tensors must exist, their shapes) belong to the model loader.
 */
#ifndef RWKVC_GGUF_H
#define RWKVC_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "rwkvc.h"

typedef struct {
    const char *name;   /* Into the mapping; not NUL-terminated. */
    size_t name_len;
    uint32_t n_dims;    /* 1..4 */
    uint64_t ne[4];     /* ggml order (ne[0] contiguous); unused dims are 1. */
    uint32_t type;      /* rwkvc_type */
    uint64_t nbytes;    /* Bytes of data. */
    const void *data;   /* Into the mapping, at data section + offset. */
} rwkvc_gguf_tensor;

typedef struct {
    const char *key;        /* Into the mapping; not NUL-terminated. */
    size_t key_len;
    uint32_t type;          /* rwkvc_meta_type */
    uint32_t array_type;    /* Element type when type == RWKVC_META_ARRAY, else == type. */
    uint64_t count;         /* Elements (1 for a scalar). */
    const uint8_t *value;   /* The value's bytes: for an array, its first element (after the type and count fields). */
    size_t value_bytes;     /* Bytes the value (all elements) occupies. */
} rwkvc_gguf_kv;

typedef struct {
    const uint8_t *base;     /* The read-only mapping of the whole file. */
    size_t size;             /* File size in bytes. */
    uint32_t version;
    uint64_t alignment;      /* general.alignment or 32. */
    uint64_t data_offset;    /* Absolute offset of the data section. */
    uint64_t n_kv;
    rwkvc_gguf_kv *kv;
    uint64_t n_tensors;
    rwkvc_gguf_tensor *tensors;
} rwkvc_gguf;

/* Maps and validates a GGUF file. On failure returns a status with a message naming the problem. */
rwkvc_status rwkvc_gguf_open(const char *path, rwkvc_gguf **out);

/* Same over a caller-owned memory buffer (no mapping; the buffer must outlive the result). For tests and fuzzing. */
rwkvc_status rwkvc_gguf_open_memory(const void *data, size_t size, rwkvc_gguf **out);

/* Unmaps and frees. NULL-safe. */
void rwkvc_gguf_close(rwkvc_gguf *g);

/* The unit in which rwkvc_gguf_make_private replaces the mapping: one x86-64 / arm64 PMD huge page (2 MiB). */
#define RWKVC_HUGE_PAGE ((size_t)2 << 20)

/*
 * Replaces the file pages behind bytes [off, off + len) of a file opened by rwkvc_gguf_open with private memory
 * (transparent huge pages where the kernel gives them) holding the same bytes: pointers into the range stay
 * valid and read the same values, also from threads reading it meanwhile. off must be a multiple of
 * RWKVC_HUGE_PAGE, and len too unless the range ends at the end of the file. Decode streams every weight once a
 * token, and reading private huge pages is faster than reading the page cache through 4 KiB mappings (fewer TLB
 * misses; on some virtual machines the page cache is much slower still). On failure the range stays mapped.
 */
rwkvc_status rwkvc_gguf_make_private(rwkvc_gguf *g, size_t off, size_t len);

/* Lookups by NUL-terminated name; NULL when absent. */
const rwkvc_gguf_kv *rwkvc_gguf_find_kv(const rwkvc_gguf *g, const char *key);
const rwkvc_gguf_tensor *rwkvc_gguf_find_tensor(const rwkvc_gguf *g, const char *name);

/* As rwkvc_gguf_find_kv, but an absent key fails with RWKVC_ERR_ARG and "metadata key 'x' not found". */
rwkvc_status rwkvc_gguf_get_kv(const rwkvc_gguf *g, const char *key, const rwkvc_gguf_kv **out);

/* Static name of a metadata value type ("u32", "string", "array"...; "unknown type" otherwise), for messages. */
const char *rwkvc_gguf_meta_type_name(uint32_t type);

/* Element `index` of a kv as an integer (any integer width or bool) / a double (any numeric type) / a string. */
rwkvc_status rwkvc_gguf_kv_int(const rwkvc_gguf_kv *kv, uint64_t index, int64_t *out);
/* Element `index` as an unsigned integer (any integer width or bool); a negative value fails with RWKVC_ERR_ARG. */
rwkvc_status rwkvc_gguf_kv_uint(const rwkvc_gguf_kv *kv, uint64_t index, uint64_t *out);
rwkvc_status rwkvc_gguf_kv_float(const rwkvc_gguf_kv *kv, uint64_t index, double *out);
rwkvc_status rwkvc_gguf_kv_string(const rwkvc_gguf_kv *kv, uint64_t index, const char **s, size_t *len);

/* All elements of a string array in one pass; count must equal kv->count. */
rwkvc_status rwkvc_gguf_kv_strings(const rwkvc_gguf_kv *kv, const char **ptrs, size_t *lens, size_t count);

/* Bytes a tensor of `type` with ne[0..3] occupies; 0 for an unknown type, a row length that is not a
   multiple of the block size, or an overflow. */
uint64_t rwkvc_tensor_nbytes(uint32_t type, const uint64_t ne[4]);

#endif /* RWKVC_GGUF_H */
