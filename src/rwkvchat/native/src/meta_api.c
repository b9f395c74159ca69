/*
 * meta_api.c: the public functions of rwkvc.h that expose a model's file: its tensor table and its
 * metadata key/value pairs. Thin wrappers over the GGUF reader (gguf.c), which owns the parsing and
 * the messages; here are only the public-API rules: clear the error, check the arguments, write the
 * out-parameters only on success.
 */
#include <string.h>

#include "model_file.h"
#include "status.h"

/* The model's file, or a failure naming the function when an argument is NULL. */
static rwkvc_status model_file(const rwkvc_model *m, const char *fn, const rwkvc_gguf **out) {
    if (m == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%s: model is NULL", fn);
    }
    const rwkvc_gguf *g = rwkvc_model_gguf(m);
    if (g == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%s: the model was not loaded from a GGUF file", fn);
    }
    *out = g;
    return RWKVC_OK;
}

/* Looks up key in m's file after the common argument checks. */
static rwkvc_status model_kv(const rwkvc_model *m, const char *key, const char *fn, const rwkvc_gguf_kv **out) {
    const rwkvc_gguf *g = NULL;
    rwkvc_status st = model_file(m, fn, &g);
    if (st != RWKVC_OK) {
        return st;
    }
    if (key == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "%s: key is NULL", fn);
    }
    return rwkvc_gguf_get_kv(g, key, out);
}

RWKVC_API rwkvc_status rwkvc_model_tensor(const rwkvc_model *m, uint64_t i, const char **name, size_t *name_len,
                                          uint32_t *type, uint32_t *n_dims, uint64_t ne[4]) {
    rwkvc_clear_error();
    const rwkvc_gguf *g = NULL;
    rwkvc_status st = model_file(m, "rwkvc_model_tensor", &g);
    if (st != RWKVC_OK) {
        return st;
    }
    if (name == NULL || name_len == NULL || type == NULL || n_dims == NULL || ne == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_tensor: NULL output pointer");
    }
    if (i >= g->n_tensors) {
        return rwkvc_fail(RWKVC_ERR_ARG, "tensor index %llu out of range (%llu tensors)", (unsigned long long)i,
                          (unsigned long long)g->n_tensors);
    }
    const rwkvc_gguf_tensor *t = &g->tensors[i];
    *name = t->name;
    *name_len = t->name_len;
    *type = t->type;
    *n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) {
        ne[d] = t->ne[d];
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_model_meta_key(const rwkvc_model *m, uint64_t i, const char **key, size_t *key_len) {
    rwkvc_clear_error();
    const rwkvc_gguf *g = NULL;
    rwkvc_status st = model_file(m, "rwkvc_model_meta_key", &g);
    if (st != RWKVC_OK) {
        return st;
    }
    if (key == NULL || key_len == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_meta_key: NULL output pointer");
    }
    if (i >= g->n_kv) {
        return rwkvc_fail(RWKVC_ERR_ARG, "metadata index %llu out of range (%llu keys)", (unsigned long long)i,
                          (unsigned long long)g->n_kv);
    }
    *key = g->kv[i].key;
    *key_len = g->kv[i].key_len;
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_model_meta_kind(const rwkvc_model *m, const char *key, uint32_t *value_type,
                                             uint32_t *array_type, uint64_t *count) {
    rwkvc_clear_error();
    if (value_type == NULL || array_type == NULL || count == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_meta_kind: NULL output pointer");
    }
    const rwkvc_gguf_kv *kv = NULL;
    rwkvc_status st = model_kv(m, key, "rwkvc_model_meta_kind", &kv);
    if (st != RWKVC_OK) {
        return st;
    }
    *value_type = kv->type;
    *array_type = kv->array_type;
    *count = kv->count;
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_model_meta_int(const rwkvc_model *m, const char *key, uint64_t index, int64_t *out) {
    rwkvc_clear_error();
    if (out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_meta_int: NULL output pointer");
    }
    const rwkvc_gguf_kv *kv = NULL;
    rwkvc_status st = model_kv(m, key, "rwkvc_model_meta_int", &kv);
    if (st != RWKVC_OK) {
        return st;
    }
    if (kv->array_type != RWKVC_META_U64) {
        return rwkvc_gguf_kv_int(kv, index, out);
    }
    /* A u64 comes back as its bit pattern, so values above INT64_MAX stay readable: the caller knows the
       type from rwkvc_model_meta_kind and adds 2^64 to a negative result. */
    uint64_t u;
    st = rwkvc_gguf_kv_uint(kv, index, &u);
    if (st == RWKVC_OK) {
        memcpy(out, &u, sizeof(*out));
    }
    return st;
}

RWKVC_API rwkvc_status rwkvc_model_meta_float(const rwkvc_model *m, const char *key, uint64_t index, double *out) {
    rwkvc_clear_error();
    if (out == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_meta_float: NULL output pointer");
    }
    const rwkvc_gguf_kv *kv = NULL;
    rwkvc_status st = model_kv(m, key, "rwkvc_model_meta_float", &kv);
    return st != RWKVC_OK ? st : rwkvc_gguf_kv_float(kv, index, out);
}

RWKVC_API rwkvc_status rwkvc_model_meta_string(const rwkvc_model *m, const char *key, uint64_t index,
                                               const char **out, size_t *out_len) {
    rwkvc_clear_error();
    if (out == NULL || out_len == NULL) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_model_meta_string: NULL output pointer");
    }
    const rwkvc_gguf_kv *kv = NULL;
    rwkvc_status st = model_kv(m, key, "rwkvc_model_meta_string", &kv);
    return st != RWKVC_OK ? st : rwkvc_gguf_kv_string(kv, index, out, out_len);
}

RWKVC_API rwkvc_status rwkvc_model_meta_strings(const rwkvc_model *m, const char *key, const char **ptrs,
                                                size_t *lens, size_t count) {
    rwkvc_clear_error();
    const rwkvc_gguf_kv *kv = NULL;
    rwkvc_status st = model_kv(m, key, "rwkvc_model_meta_strings", &kv);
    return st != RWKVC_OK ? st : rwkvc_gguf_kv_strings(kv, ptrs, lens, count);
}
