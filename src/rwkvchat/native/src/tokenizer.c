/*
 * tokenizer.c: greedy longest-match byte tokenizer (the RWKV World tokenizer's algorithm).
 *
 * At each position the longest vocabulary token that is a prefix of the remaining bytes is emitted
 * (docs/tokenizers.md §1.3). The vocabulary is compiled into a flat trie:
 *
 *   - nodes are numbered breadth-first, so the children of a node are contiguous and sorted by byte;
 *     node 0 is the root and is never a child, which lets 0 mean "no child" in the lookup tables;
 *   - the first two bytes are resolved by direct tables (root_child[256] and pair[65536]), because
 *     every position starts there and those levels have the widest fan-out;
 *   - deeper nodes with many children get a dense 256-entry table, the others a short sorted run of
 *     labels that is scanned linearly (most nodes deep in the trie have one or two children).
 *
 * Encoding is O(longest token) per emitted token and never reads past text_len.
 */
#include <stdlib.h>
#include <string.h>

#include "status.h"

/* Longest token accepted, in bytes. The World vocabulary's longest is 128 (128 spaces). */
#define TOK_MAX_TOKEN_LEN 1024

/* Nodes with more children than this get a dense child table (uint32[256], 1 KiB each). */
#define TOK_DENSE_MIN_CHILDREN 12

/* Marks "no token ends here" in node_token. */
#define TOK_NONE UINT32_MAX

/* Marks "no dense table" in node_dense. */
#define TOK_NO_DENSE UINT32_MAX

struct rwkvc_tokenizer {
    uint32_t n_nodes;
    uint32_t *node_token;   /* [n_nodes] id of the token ending at this node, or TOK_NONE. */
    uint32_t *node_first;   /* [n_nodes] index of the first child (children are contiguous). */
    uint16_t *node_nchild;  /* [n_nodes] number of children (<= 256). */
    uint32_t *node_dense;   /* [n_nodes] index of the node's dense table, or TOK_NO_DENSE. */
    uint8_t *node_label;    /* [n_nodes] byte on the edge into the node (unused for the root). */
    uint32_t *dense;        /* [n_dense][256] child node per byte, 0 = none. */
    uint32_t root_child[256];   /* Child node of the root per first byte, 0 = none. */
    uint32_t *pair;             /* [65536] node reached by bytes (b0, b1) at index b0 << 8 | b1, 0 = none. */
};

/* One vocabulary entry while building: its bytes and id, sorted lexicographically. */
typedef struct {
    const uint8_t *bytes;
    size_t len;
    uint32_t id;
} tok_entry;

static int tok_entry_cmp(const void *pa, const void *pb) {
    const tok_entry *a = pa;
    const tok_entry *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->bytes, b->bytes, n) : 0;
    if (c != 0) {
        return c;
    }
    if (a->len != b->len) {
        return a->len < b->len ? -1 : 1;
    }
    /* Equal byte strings: order by id so that the highest id wins below, as in the reference code. */
    return a->id < b->id ? -1 : (a->id > b->id ? 1 : 0);
}

RWKVC_API void rwkvc_tokenizer_free(rwkvc_tokenizer *t) {
    if (t == NULL) {
        return;
    }
    free(t->node_token);
    free(t->node_first);
    free(t->node_nchild);
    free(t->node_dense);
    free(t->node_label);
    free(t->dense);
    free(t->pair);
    free(t);
}

/* Child of node n by byte c, or 0 if there is none. */
static inline uint32_t tok_child(const rwkvc_tokenizer *t, uint32_t n, uint8_t c) {
    uint32_t d = t->node_dense[n];
    if (d != TOK_NO_DENSE) {
        return t->dense[(size_t)d * 256 + c];
    }
    uint32_t first = t->node_first[n];
    uint32_t end = first + t->node_nchild[n];
    for (uint32_t i = first; i < end; i++) {
        uint8_t l = t->node_label[i];
        if (l == c) {
            return i;
        }
        if (l > c) {
            break;
        }
    }
    return 0;
}

/*
 * Builds the breadth-first trie from entries sorted lexicographically. Every node covers a run
 * [lo, hi) of entries that share its prefix (of length = its depth); the entries equal to the prefix
 * come first in the run. Returns RWKVC_OK or RWKVC_ERR_NOMEM.
 */
static rwkvc_status tok_build(rwkvc_tokenizer *t, const tok_entry *e, size_t n_entries, size_t max_nodes) {
    /* Per-node build state: the run of entries and the depth. Freed before returning. */
    size_t *lo = malloc(max_nodes * sizeof(size_t));
    size_t *hi = malloc(max_nodes * sizeof(size_t));
    uint32_t *depth = malloc(max_nodes * sizeof(uint32_t));
    if (lo == NULL || hi == NULL || depth == NULL) {
        free(lo);
        free(hi);
        free(depth);
        return rwkvc_fail(RWKVC_ERR_NOMEM, "tokenizer: out of memory building the trie");
    }
    uint32_t n_nodes = 1;
    uint32_t n_dense = 0;
    lo[0] = 0;
    hi[0] = n_entries;
    depth[0] = 0;
    t->node_label[0] = 0;
    for (uint32_t n = 0; n < n_nodes; n++) {
        size_t a = lo[n];
        size_t b = hi[n];
        uint32_t d = depth[n];
        t->node_token[n] = TOK_NONE;
        /* Entries equal to the prefix: the last one has the highest id among duplicates. */
        while (a < b && e[a].len == d) {
            t->node_token[n] = e[a].id;
            a++;
        }
        t->node_first[n] = n_nodes;
        t->node_nchild[n] = 0;
        t->node_dense[n] = TOK_NO_DENSE;
        /* Group the remaining entries by their byte at depth d; each group becomes a child. */
        while (a < b) {
            uint8_t c = e[a].bytes[d];
            size_t g = a + 1;
            while (g < b && e[g].bytes[d] == c) {
                g++;
            }
            lo[n_nodes] = a;
            hi[n_nodes] = g;
            depth[n_nodes] = d + 1;
            t->node_label[n_nodes] = c;
            n_nodes++;
            t->node_nchild[n]++;
            a = g;
        }
        if (t->node_nchild[n] > TOK_DENSE_MIN_CHILDREN) {
            n_dense++;
        }
    }
    free(lo);
    free(hi);
    free(depth);
    t->n_nodes = n_nodes;

    t->dense = calloc(n_dense ? (size_t)n_dense * 256 : 1, sizeof(uint32_t));
    t->pair = calloc(65536, sizeof(uint32_t));
    if (t->dense == NULL || t->pair == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "tokenizer: out of memory for lookup tables");
    }
    uint32_t k = 0;
    for (uint32_t n = 0; n < n_nodes; n++) {
        if (t->node_nchild[n] > TOK_DENSE_MIN_CHILDREN) {
            uint32_t first = t->node_first[n];
            for (uint32_t i = first; i < first + t->node_nchild[n]; i++) {
                t->dense[(size_t)k * 256 + t->node_label[i]] = i;
            }
            t->node_dense[n] = k++;
        }
    }
    memset(t->root_child, 0, sizeof(t->root_child));
    for (uint32_t i = t->node_first[0]; i < t->node_first[0] + t->node_nchild[0]; i++) {
        uint8_t b0 = t->node_label[i];
        t->root_child[b0] = i;
        for (uint32_t j = t->node_first[i]; j < t->node_first[i] + t->node_nchild[i]; j++) {
            t->pair[(size_t)b0 << 8 | t->node_label[j]] = j;
        }
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_tokenizer_new(const uint8_t *const *tokens, const size_t *token_lens, size_t n_tokens,
                                           rwkvc_tokenizer **out) {
    rwkvc_clear_error();
    if (out == NULL || (n_tokens > 0 && (tokens == NULL || token_lens == NULL))) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_tokenizer_new: NULL argument");
    }
    if (n_tokens >= UINT32_MAX) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_tokenizer_new: %zu tokens is too many", n_tokens);
    }
    /* Collect the non-empty entries and count the bytes, which bound the number of trie nodes. */
    tok_entry *e = malloc((n_tokens ? n_tokens : 1) * sizeof(tok_entry));
    if (e == NULL) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "tokenizer: out of memory for %zu tokens", n_tokens);
    }
    size_t n_entries = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_tokens; i++) {
        size_t len = token_lens[i];
        if (len == 0) {
            continue;
        }
        if (tokens[i] == NULL) {
            free(e);
            return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_tokenizer_new: token %zu has length %zu but a NULL pointer", i,
                              len);
        }
        if (len > TOK_MAX_TOKEN_LEN) {
            free(e);
            return rwkvc_fail(RWKVC_ERR_FORMAT, "tokenizer: token %zu is %zu bytes long (at most %d supported)", i,
                              len, TOK_MAX_TOKEN_LEN);
        }
        e[n_entries].bytes = tokens[i];
        e[n_entries].len = len;
        e[n_entries].id = (uint32_t)i;
        n_entries++;
        total += len;
    }
    if (total + 1 >= UINT32_MAX) {
        free(e);
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_tokenizer_new: vocabulary of %zu bytes is too large", total);
    }
    qsort(e, n_entries, sizeof(tok_entry), tok_entry_cmp);

    size_t max_nodes = total + 1;
    rwkvc_tokenizer *t = calloc(1, sizeof(rwkvc_tokenizer));
    if (t == NULL) {
        free(e);
        return rwkvc_fail(RWKVC_ERR_NOMEM, "tokenizer: out of memory");
    }
    t->node_token = malloc(max_nodes * sizeof(uint32_t));
    t->node_first = malloc(max_nodes * sizeof(uint32_t));
    t->node_nchild = malloc(max_nodes * sizeof(uint16_t));
    t->node_dense = malloc(max_nodes * sizeof(uint32_t));
    t->node_label = malloc(max_nodes * sizeof(uint8_t));
    rwkvc_status s;
    if (t->node_token == NULL || t->node_first == NULL || t->node_nchild == NULL || t->node_dense == NULL ||
        t->node_label == NULL) {
        s = rwkvc_fail(RWKVC_ERR_NOMEM, "tokenizer: out of memory for %zu trie nodes", max_nodes);
    } else {
        s = tok_build(t, e, n_entries, max_nodes);
    }
    free(e);
    if (s != RWKVC_OK) {
        rwkvc_tokenizer_free(t);
        return s;
    }
    *out = t;
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_tokenizer_encode(const rwkvc_tokenizer *t, const uint8_t *text, size_t text_len,
                                              uint32_t *ids, size_t ids_cap, size_t *n_ids) {
    rwkvc_clear_error();
    if (t == NULL || n_ids == NULL || (text_len > 0 && text == NULL) || (ids_cap > 0 && ids == NULL)) {
        return rwkvc_fail(RWKVC_ERR_ARG, "rwkvc_tokenizer_encode: NULL argument");
    }
    size_t n_out = 0;
    size_t p = 0;
    while (p < text_len) {
        uint8_t b0 = text[p];
        uint32_t node = t->root_child[b0];
        uint32_t best_id = TOK_NONE;
        size_t best_len = 0;
        if (node != 0 && t->node_token[node] != TOK_NONE) {
            best_id = t->node_token[node];
            best_len = 1;
        }
        if (node != 0 && p + 1 < text_len) {
            node = t->pair[(size_t)b0 << 8 | text[p + 1]];
            size_t q = p + 2;
            while (node != 0) {
                if (t->node_token[node] != TOK_NONE) {
                    best_id = t->node_token[node];
                    best_len = q - p;
                }
                if (q >= text_len) {
                    break;
                }
                node = tok_child(t, node, text[q]);
                q++;
            }
        }
        if (best_len == 0) {
            return rwkvc_fail(RWKVC_ERR_FORMAT,
                              "tokenizer: no token matches byte 0x%02x at offset %zu (the vocabulary lacks that "
                              "single byte)", b0, p);
        }
        if (n_out >= ids_cap) {
            return rwkvc_fail(RWKVC_ERR_SIZE, "rwkvc_tokenizer_encode: ids buffer of %zu entries is too small "
                              "(text of %zu bytes)", ids_cap, text_len);
        }
        ids[n_out++] = best_id;
        p += best_len;
    }
    *n_ids = n_out;
    return RWKVC_OK;
}
