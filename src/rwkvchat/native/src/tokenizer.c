/*
 * tokenizer.c: greedy longest-match byte tokenizer. PLACEHOLDER until the tokenizer work lands.
 */
#include "status.h"

RWKVC_API rwkvc_status rwkvc_tokenizer_new(const uint8_t *const *tokens, const size_t *token_lens, size_t n_tokens,
                                           rwkvc_tokenizer **out) {
    (void)tokens; (void)token_lens; (void)n_tokens; (void)out;
    rwkvc_clear_error();
    return rwkvc_fail(RWKVC_ERR_INTERNAL, "tokenizer not implemented yet");
}

RWKVC_API void rwkvc_tokenizer_free(rwkvc_tokenizer *t) {
    (void)t;
}

RWKVC_API rwkvc_status rwkvc_tokenizer_encode(const rwkvc_tokenizer *t, const uint8_t *text, size_t text_len,
                                              uint32_t *ids, size_t ids_cap, size_t *n_ids) {
    (void)t; (void)text; (void)text_len; (void)ids; (void)ids_cap; (void)n_ids;
    rwkvc_clear_error();
    return rwkvc_fail(RWKVC_ERR_INTERNAL, "tokenizer not implemented yet");
}
