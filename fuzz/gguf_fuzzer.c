/*
 * gguf_fuzzer.c: libFuzzer target over every C reader of outside bytes.
 *
 * Each input is treated as a whole GGUF file and goes through the same path as a file from disk:
 *   1. rwkvc_gguf_open_memory (header, metadata, tensor table, data ranges);
 *   2. every metadata query on every key (ints, floats, strings, string arrays, element by element for the
 *      first elements of arrays) and rwkvc_tensor_nbytes on every tensor;
 *   3. when the file carries tokenizer.ggml.tokens as a string array: the C trie (rwkvc_tokenizer_new) over
 *      those raw strings, then encoding a fixed text and the input's own bytes;
 *   4. the full model load (rwkvc_model_from_gguf takes the parsed file, so nothing touches the disk), the
 *      public info / tensor / metadata API, and when it loads: a context, a state and a two-token evaluation
 *      with logits, so the shapes the loader accepted are exercised by the forward pass too.
 *
 * libFuzzer hands over a buffer of exactly `size` bytes; built with -fsanitize=address every read past it is
 * reported. The library must never crash, abort or hang on any input: every failure is a status.
 * Build: see fuzz/README.md (fuzz/CMakeLists.txt, clang only).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "rwkvc.h"

/* Elements queried one by one per array: enough to reach every type branch without quadratic time. */
#define FUZZ_MAX_ELEMS 16

/* Largest string array handed to the tokenizer; the real World vocabulary has 65536 entries. */
#define FUZZ_MAX_VOCAB 70000

/* Sinks that keep the compiler from dropping the queries' results. */
static volatile uint64_t sink_u64;
static volatile double sink_f64;

static void query_kv(const rwkvc_gguf *g, const rwkvc_gguf_kv *kv) {
    char key[256];
    size_t n = kv->key_len < sizeof(key) - 1 ? kv->key_len : sizeof(key) - 1;
    memcpy(key, kv->key, n);
    key[n] = '\0';
    /* The lookup by name must find a key with this name (the first one if the file repeats it). */
    const rwkvc_gguf_kv *found = rwkvc_gguf_find_kv(g, key);
    if (n == kv->key_len && memchr(key, '\0', n) == NULL && found == NULL) {
        abort(); /* A key the table holds must be found: a real bug, reported as a crash. */
    }
    (void)rwkvc_gguf_meta_type_name(kv->type);
    (void)rwkvc_gguf_meta_type_name(kv->array_type);
    uint64_t limit = kv->count < FUZZ_MAX_ELEMS ? kv->count : FUZZ_MAX_ELEMS;
    /* One index past the end too: it must fail cleanly, not read. */
    for (uint64_t i = 0; i <= limit; i++) {
        int64_t iv;
        uint64_t uv;
        double fv;
        const char *s;
        size_t len;
        if (rwkvc_gguf_kv_int(kv, i, &iv) == RWKVC_OK) {
            sink_u64 += (uint64_t)iv;
        }
        if (rwkvc_gguf_kv_uint(kv, i, &uv) == RWKVC_OK) {
            sink_u64 += uv;
        }
        if (rwkvc_gguf_kv_float(kv, i, &fv) == RWKVC_OK) {
            sink_f64 += fv;
        }
        if (rwkvc_gguf_kv_string(kv, i, &s, &len) == RWKVC_OK && len > 0) {
            sink_u64 += (uint8_t)s[0] + (uint8_t)s[len - 1];
        }
    }
    if (kv->type == RWKVC_META_ARRAY && kv->array_type == RWKVC_META_STRING && kv->count <= FUZZ_MAX_VOCAB) {
        size_t count = (size_t)kv->count;
        const char **ptrs = malloc((count ? count : 1) * sizeof(*ptrs));
        size_t *lens = malloc((count ? count : 1) * sizeof(*lens));
        if (ptrs && lens && rwkvc_gguf_kv_strings(kv, ptrs, lens, count) == RWKVC_OK) {
            for (size_t i = 0; i < count; i++) {
                if (lens[i] > 0) {
                    sink_u64 += (uint8_t)ptrs[i][lens[i] - 1];
                }
            }
            /* A wrong count must be refused. */
            if (count > 0 && rwkvc_gguf_kv_strings(kv, ptrs, lens, count - 1) == RWKVC_OK) {
                abort();
            }
        }
        free(ptrs);
        free(lens);
    }
}

/* Builds the C trie from the file's token strings (raw, not unescaped: the trie takes any bytes). */
static void fuzz_tokenizer(const rwkvc_gguf *g, const uint8_t *data, size_t size) {
    const rwkvc_gguf_kv *kv = rwkvc_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!kv || kv->type != RWKVC_META_ARRAY || kv->array_type != RWKVC_META_STRING || kv->count > FUZZ_MAX_VOCAB) {
        return;
    }
    size_t count = (size_t)kv->count;
    const char **ptrs = malloc((count ? count : 1) * sizeof(*ptrs));
    size_t *lens = malloc((count ? count : 1) * sizeof(*lens));
    rwkvc_tokenizer *t = NULL;
    if (ptrs && lens && rwkvc_gguf_kv_strings(kv, ptrs, lens, count) == RWKVC_OK &&
        rwkvc_tokenizer_new((const uint8_t *const *)ptrs, lens, count, &t) == RWKVC_OK) {
        static const uint8_t text[] = "Hello, world!\n\nUser: \xe4\xbd\xa0\xe5\xa5\xbd \xff\xfe\x00 end";
        size_t cap = size > sizeof(text) ? size : sizeof(text);
        uint32_t *ids = malloc(cap * sizeof(uint32_t));
        size_t n_ids = 0;
        if (ids) {
            if (rwkvc_tokenizer_encode(t, text, sizeof(text) - 1, ids, sizeof(text) - 1, &n_ids) == RWKVC_OK) {
                for (size_t i = 0; i < n_ids; i++) {
                    if (ids[i] >= count) {
                        abort(); /* An id outside the vocabulary: a real bug. */
                    }
                }
            }
            (void)rwkvc_tokenizer_encode(t, data, size, ids, size, &n_ids);
            /* A too-small id buffer must be refused with a status, never overrun. */
            (void)rwkvc_tokenizer_encode(t, data, size, ids, size / 4, &n_ids);
        }
        free(ids);
    }
    rwkvc_tokenizer_free(t);
    free(ptrs);
    free(lens);
}

static void fuzz_public_api(const rwkvc_model *m) {
    rwkvc_info info;
    if (rwkvc_model_info(m, &info) != RWKVC_OK) {
        abort();
    }
    for (uint64_t i = 0; i <= info.n_tensors && i < 64; i++) {
        const char *name;
        size_t name_len;
        uint32_t type, n_dims;
        uint64_t ne[4];
        (void)rwkvc_model_tensor(m, i, &name, &name_len, &type, &n_dims, ne);
    }
    for (uint64_t i = 0; i <= info.n_meta && i < 64; i++) {
        const char *key;
        size_t key_len;
        if (rwkvc_model_meta_key(m, i, &key, &key_len) != RWKVC_OK || key_len >= 256) {
            continue;
        }
        char k[256];
        memcpy(k, key, key_len);
        k[key_len] = '\0';
        uint32_t vt, at;
        uint64_t count;
        if (rwkvc_model_meta_kind(m, k, &vt, &at, &count) != RWKVC_OK) {
            continue;
        }
        int64_t iv;
        double fv;
        const char *s;
        size_t len;
        (void)rwkvc_model_meta_int(m, k, 0, &iv);
        (void)rwkvc_model_meta_float(m, k, 0, &fv);
        (void)rwkvc_model_meta_string(m, k, 0, &s, &len);
        (void)rwkvc_model_meta_int(m, k, count, &iv);
    }
}

static void fuzz_eval(const rwkvc_model *m) {
    rwkvc_info info;
    rwkvc_ctx *c = NULL;
    if (rwkvc_model_info(m, &info) != RWKVC_OK || rwkvc_ctx_new(m, 1, &c) != RWKVC_OK) {
        return;
    }
    float *state = malloc(info.state_len * sizeof(float));
    float *logits = malloc((size_t)info.n_vocab * 2 * sizeof(float));
    if (state && logits && rwkvc_state_init(m, state, info.state_len) == RWKVC_OK) {
        uint32_t tokens[2] = {0, info.n_vocab - 1};
        (void)rwkvc_eval(c, tokens, 2, state, info.state_len, logits, info.n_vocab);
        (void)rwkvc_eval_all(c, tokens, 2, state, info.state_len, logits, (size_t)info.n_vocab * 2);
        /* Invalid arguments must be refused before anything runs. */
        uint32_t bad = info.n_vocab;
        if (rwkvc_eval(c, &bad, 1, state, info.state_len, logits, info.n_vocab) == RWKVC_OK) {
            abort();
        }
    }
    free(state);
    free(logits);
    rwkvc_ctx_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rwkvc_gguf *g = NULL;
    if (rwkvc_gguf_open_memory(data, size, &g) != RWKVC_OK) {
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        query_kv(g, &g->kv[i]);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const rwkvc_gguf_tensor *t = &g->tensors[i];
        if (rwkvc_tensor_nbytes(t->type, t->ne) != t->nbytes) {
            abort(); /* The table's sizes must agree with the size function. */
        }
        char name[80];
        size_t n = t->name_len < sizeof(name) - 1 ? t->name_len : sizeof(name) - 1;
        memcpy(name, t->name, n);
        name[n] = '\0';
        (void)rwkvc_gguf_find_tensor(g, name);
    }
    fuzz_tokenizer(g, data, size);

    /* rwkvc_model_from_gguf owns g from here on (it closes it on failure too). */
    rwkvc_model *m = NULL;
    if (rwkvc_model_from_gguf(g, 1, &m) != RWKVC_OK) {
        return 0;
    }
    fuzz_public_api(m);
    fuzz_eval(m);
    rwkvc_model_free(m);
    return 0;
}
