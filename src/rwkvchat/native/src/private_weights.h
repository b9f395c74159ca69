/*
 * private_weights.h: moving a model's weights out of the file mapping into private huge-page memory, on the
 * caller's thread (RWKVC_WEIGHTS_COPY) or in the background (RWKVC_WEIGHTS_AUTO). See private_weights.c.
 */
#ifndef RWKVC_PRIVATE_WEIGHTS_H
#define RWKVC_PRIVATE_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct rwkvc_private_weights rwkvc_private_weights;

/*
 * Bytes a move of g's data section would copy, leaving the huge pages wholly inside [skip_begin, skip_end)
 * (offsets into the file) mapped; *begin, *end receive the range of the mapping it walks.
 */
uint64_t rwkvc_private_weights_plan(const rwkvc_gguf *g, size_t skip_begin, size_t skip_end, size_t *begin,
                                    size_t *end);

/*
 * Moves the data section of g (opened by rwkvc_gguf_open; g must outlive the result) except the huge pages
 * wholly inside [skip_begin, skip_end). With background, a thread of its own does it, a step at a time whenever
 * no evaluation has run for 50 ms, and this returns at once
 * (RWKVC_OK even if the thread cannot start: the weights then stay mapped); otherwise it is done on return, and a
 * failure is returned (with what was moved staying moved).
 */
rwkvc_status rwkvc_private_weights_start(rwkvc_gguf *g, size_t skip_begin, size_t skip_end, bool background,
                                         rwkvc_private_weights **out);

/* Bytes moved so far and bytes to move; with wait, after the background move has ended. Thread-safe. */
void rwkvc_private_weights_progress(rwkvc_private_weights *pw, bool wait, uint64_t *moved, uint64_t *total);

/* Mark an evaluation starting / ending (a background move steps only while none has run for a while). NULL-safe,
   thread-safe. */
void rwkvc_private_weights_eval_begin(rwkvc_private_weights *pw);
void rwkvc_private_weights_eval_end(rwkvc_private_weights *pw);

/* Stops a background move after its current chunk, waits for it, and frees. NULL-safe. */
void rwkvc_private_weights_free(rwkvc_private_weights *pw);

#endif
