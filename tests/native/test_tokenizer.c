/*
 * test_tokenizer.c: unit checks of the greedy longest-match tokenizer on small vocabularies.
 *
 * Covers longest match with fallback to shorter tokens, duplicates (highest id wins), empty entries
 * that are never produced, a vocabulary lacking a single byte (RWKVC_ERR_FORMAT naming it), a too
 * small output buffer (RWKVC_ERR_SIZE), and a brute-force comparison on random text over a vocabulary
 * with deep and wide nodes (so the dense and the sparse child lookups are both exercised).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rwkvc.h"

static int g_failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            g_failures++;                                                            \
        }                                                                            \
    } while (0)

/* Builds a tokenizer from NUL-terminated strings (an empty string is an unused id). */
static rwkvc_tokenizer *make_tok(const char *const *words, size_t n) {
    const uint8_t **ptrs = malloc(n * sizeof(*ptrs));
    size_t *lens = malloc(n * sizeof(*lens));
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = (const uint8_t *)words[i];
        lens[i] = strlen(words[i]);
    }
    rwkvc_tokenizer *t = NULL;
    rwkvc_status s = rwkvc_tokenizer_new(ptrs, lens, n, &t);
    free(ptrs);
    free(lens);
    CHECK(s == RWKVC_OK);
    return t;
}

/* Encodes a string and compares with the expected ids. */
static void expect_ids(const rwkvc_tokenizer *t, const char *text, const uint32_t *want, size_t n_want) {
    uint32_t ids[256];
    size_t n = 0;
    rwkvc_status s = rwkvc_tokenizer_encode(t, (const uint8_t *)text, strlen(text), ids, 256, &n);
    CHECK(s == RWKVC_OK);
    CHECK(n == n_want);
    if (n == n_want) {
        for (size_t i = 0; i < n; i++) {
            if (ids[i] != want[i]) {
                fprintf(stderr, "  text \"%s\": id %zu is %u, want %u\n", text, i, ids[i], want[i]);
                g_failures++;
            }
        }
    }
}

static void test_longest_match(void) {
    /* Ids: 0 unused, 1..3 single letters, then longer tokens. "abcd" has no token but "abc" does. */
    const char *words[] = {"", "a", "b", "c", "ab", "abc", "abcde", "bc", "d", "e"};
    rwkvc_tokenizer *t = make_tok(words, sizeof(words) / sizeof(words[0]));
    if (t == NULL) {
        return;
    }
    expect_ids(t, "abc", (const uint32_t[]){5}, 1);
    /* "abcd" is not a token: the match falls back to "abc", then "d". */
    expect_ids(t, "abcd", (const uint32_t[]){5, 8}, 2);
    expect_ids(t, "abcde", (const uint32_t[]){6}, 1);
    expect_ids(t, "abcdeabcd", (const uint32_t[]){6, 5, 8}, 3);
    /* Greedy, not optimal: "ab" + "c" is never chosen over "abc". */
    expect_ids(t, "bcab", (const uint32_t[]){7, 4}, 2);
    expect_ids(t, "a", (const uint32_t[]){1}, 1);
    expect_ids(t, "", (const uint32_t[]){0}, 0);

    /* A byte with no token: RWKVC_ERR_FORMAT and a message naming the byte and the offset. */
    uint32_t ids[16];
    size_t n = 12345;
    rwkvc_status s = rwkvc_tokenizer_encode(t, (const uint8_t *)"abz", 3, ids, 16, &n);
    CHECK(s == RWKVC_ERR_FORMAT);
    CHECK(strstr(rwkvc_last_error(), "0x7a") != NULL);
    CHECK(strstr(rwkvc_last_error(), "offset 2") != NULL);
    CHECK(n == 12345);

    /* Capacity: 3 ids needed, 2 given. */
    s = rwkvc_tokenizer_encode(t, (const uint8_t *)"abcdeabcd", 9, ids, 2, &n);
    CHECK(s == RWKVC_ERR_SIZE);
    s = rwkvc_tokenizer_encode(t, (const uint8_t *)"abcdeabcd", 9, ids, 3, &n);
    CHECK(s == RWKVC_OK && n == 3);

    /* NULL arguments are reported, not dereferenced. */
    CHECK(rwkvc_tokenizer_encode(NULL, (const uint8_t *)"a", 1, ids, 16, &n) == RWKVC_ERR_ARG);
    CHECK(rwkvc_tokenizer_encode(t, NULL, 1, ids, 16, &n) == RWKVC_ERR_ARG);
    CHECK(rwkvc_tokenizer_encode(t, (const uint8_t *)"a", 1, ids, 16, NULL) == RWKVC_ERR_ARG);
    rwkvc_tokenizer_free(t);
    rwkvc_tokenizer_free(NULL);
}

static void test_duplicates_and_bytes(void) {
    /* Duplicate "xy" at ids 3 and 5: the highest id wins, as in the reference implementation. */
    const char *words[] = {"x", "y", "", "xy", "yx", "xy"};
    rwkvc_tokenizer *t = make_tok(words, 6);
    if (t == NULL) {
        return;
    }
    expect_ids(t, "xyyxx", (const uint32_t[]){5, 4, 0}, 3);
    rwkvc_tokenizer_free(t);

    /* Arbitrary bytes including NUL and 0xff; tokens are byte strings, not C strings. */
    const uint8_t b0[] = {0x00}, b1[] = {0xff}, b2[] = {0x00, 0xff}, b3[] = {0xff, 0x00, 0x00};
    const uint8_t *ptrs[] = {b0, b1, b2, b3};
    size_t lens[] = {1, 1, 2, 3};
    rwkvc_tokenizer *u = NULL;
    CHECK(rwkvc_tokenizer_new(ptrs, lens, 4, &u) == RWKVC_OK);
    if (u != NULL) {
        const uint8_t text[] = {0x00, 0xff, 0x00, 0x00, 0xff, 0xff, 0x00};
        uint32_t ids[8];
        size_t n = 0;
        CHECK(rwkvc_tokenizer_encode(u, text, sizeof(text), ids, 8, &n) == RWKVC_OK);
        /* Greedy: [00 ff] [00] [00 ff] [ff] [00]; "ff 00" is only a prefix of the token ff 00 00. */
        CHECK(n == 5);
        CHECK(n == 5 && ids[0] == 2 && ids[1] == 0 && ids[2] == 2 && ids[3] == 1 && ids[4] == 0);
        rwkvc_tokenizer_free(u);
    }

    /* A token longer than the supported maximum is a format error. */
    static uint8_t big[2000];
    const uint8_t *bp[] = {big};
    size_t bl[] = {sizeof(big)};
    rwkvc_tokenizer *v = NULL;
    CHECK(rwkvc_tokenizer_new(bp, bl, 1, &v) == RWKVC_ERR_FORMAT);
    CHECK(v == NULL);
    CHECK(rwkvc_tokenizer_new(NULL, NULL, 0, NULL) == RWKVC_ERR_ARG);
}

/* Simple LCG so the test is deterministic without depending on rand()'s implementation. */
static uint32_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

static void test_random_vs_brute_force(void) {
    /* Vocabulary: all 256 single bytes (id = byte + 1) plus random tokens of 2..40 bytes over a small
       alphabet, so prefixes are shared deeply and some nodes have many children. */
    enum { N_RANDOM = 3000, N_TOK = 257 + N_RANDOM };
    static uint8_t storage[N_RANDOM][40];
    const uint8_t *ptrs[N_TOK];
    size_t lens[N_TOK];
    static uint8_t singles[256];
    uint64_t seed = 42;
    ptrs[0] = NULL;
    lens[0] = 0;
    for (int b = 0; b < 256; b++) {
        singles[b] = (uint8_t)b;
        ptrs[b + 1] = &singles[b];
        lens[b + 1] = 1;
    }
    for (int i = 0; i < N_RANDOM; i++) {
        size_t len = 2 + lcg(&seed) % 39;
        for (size_t j = 0; j < len; j++) {
            /* Two narrow bytes, then a wide one (so depth-2 nodes have up to 64 children and get
               dense tables), then a narrow alphabet that shares long prefixes. */
            uint32_t r = lcg(&seed);
            storage[i][j] = (uint8_t)(j < 2 ? 'A' + r % 4 : (j == 2 ? '0' + r % 64 : 'a' + r % 4));
        }
        ptrs[257 + i] = storage[i];
        lens[257 + i] = len;
    }
    rwkvc_tokenizer *t = NULL;
    CHECK(rwkvc_tokenizer_new(ptrs, lens, N_TOK, &t) == RWKVC_OK);
    if (t == NULL) {
        return;
    }
    enum { TEXT_LEN = 20000 };
    static uint8_t text[TEXT_LEN];
    for (size_t i = 0; i < TEXT_LEN; i++) {
        uint32_t r = lcg(&seed) % 10;
        uint32_t v = lcg(&seed);
        text[i] = (uint8_t)(r < 3 ? 'A' + v % 4 : (r < 5 ? '0' + v % 64 : (r < 9 ? 'a' + v % 4 : v % 256)));
    }
    static uint32_t ids[TEXT_LEN];
    size_t n = 0;
    CHECK(rwkvc_tokenizer_encode(t, text, TEXT_LEN, ids, TEXT_LEN, &n) == RWKVC_OK);
    /* Brute force: at each position scan every token for the longest (highest id on ties) prefix. */
    size_t p = 0;
    size_t k = 0;
    int mismatches = 0;
    while (p < TEXT_LEN && k < n) {
        size_t best_len = 0;
        uint32_t best_id = 0;
        for (uint32_t i = 1; i < N_TOK; i++) {
            if (lens[i] >= best_len && lens[i] <= TEXT_LEN - p && memcmp(ptrs[i], text + p, lens[i]) == 0) {
                best_len = lens[i];
                best_id = i;
            }
        }
        if (ids[k] != best_id) {
            mismatches++;
            break;
        }
        p += best_len;
        k++;
    }
    CHECK(mismatches == 0);
    CHECK(p == TEXT_LEN && k == n);
    rwkvc_tokenizer_free(t);
}

int main(void) {
    test_longest_match();
    test_duplicates_and_bytes();
    test_random_vs_brute_force();
    if (g_failures != 0) {
        fprintf(stderr, "test_tokenizer: %d failure(s)\n", g_failures);
        return 1;
    }
    printf("test_tokenizer: ok\n");
    return 0;
}
