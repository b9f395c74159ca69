/*
 * private_weights.c: moves a model's weights from the file mapping into private huge-page memory
 * (rwkvc_gguf_make_private), a chunk at a time, on the caller's thread or on a thread of its own.
 *
 * Why: decode reads every weight once a token, and private transparent huge pages read faster than the page
 * cache mapped in 4 KiB pages (fewer TLB misses; on some virtual machines page-cache pages are much slower
 * still, measured in docs/PERFORMANCE.md). Moving in the background, a step at a time while the engine is idle
 * (in a chat: while the user reads and types), keeps the load, the first token and a reply being generated as
 * fast as with a plain mmap; the engine reads the same bytes at the same addresses before and after each step.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "private_weights.h"
#include "status.h"

/* Bytes moved per step: small enough that an evaluation starting meanwhile, or model free, waits little for the
   step to end (tens of ms), large enough that each mremap moves many huge pages. */
#define CHUNK_BYTES ((size_t)16 << 20)
/* The background move takes a step only after no evaluation has run for this long, so that it never slows a
   reply being generated (decode calls come back to back) nor the first token after a load. */
#define IDLE_NS 50000000LL
/* How often a waiting mover looks again. */
#define POLL_NS 2000000L

struct rwkvc_private_weights {
    rwkvc_gguf *g;
    size_t begin, end;             /* [begin, end): the part of the mapping to move, begin huge-page aligned. */
    size_t skip_begin, skip_end;   /* Huge pages wholly inside stay mapped. */
    uint64_t total;                /* Bytes to move. */
    _Atomic uint64_t moved;        /* Bytes moved so far. */
    atomic_bool stop;              /* Set by rwkvc_private_weights_free. */
    atomic_uint running;           /* Evaluations running now. */
    _Atomic int64_t last_end_ns;   /* CLOCK_MONOTONIC time the last evaluation ended (or the move started). */
    bool wait_idle;                /* Background: take each step only when the engine is idle. */
    pthread_mutex_t join_lock;     /* Guards has_thread: waits may come from several threads. */
    pthread_t thread;
    bool has_thread;               /* A mover thread exists and has not been joined. */
};

static bool page_skipped(const rwkvc_private_weights *pw, size_t page) {
    return page >= pw->skip_begin && page + RWKVC_HUGE_PAGE <= pw->skip_end;
}

/* End of the run of moved pages starting at page, at most CHUNK_BYTES long. */
static size_t run_end(const rwkvc_private_weights *pw, size_t page) {
    size_t end = page;
    while (end < pw->end && end - page < CHUNK_BYTES && !page_skipped(pw, end)) {
        end = end + RWKVC_HUGE_PAGE < pw->end ? end + RWKVC_HUGE_PAGE : pw->end;
    }
    return end;
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Waits until no evaluation has run for IDLE_NS; false if asked to stop meanwhile. */
static bool wait_until_idle(rwkvc_private_weights *pw) {
    while (!atomic_load(&pw->stop)) {
        if (atomic_load(&pw->running) == 0 && now_ns() - atomic_load(&pw->last_end_ns) >= IDLE_NS) {
            return true;
        }
        struct timespec poll = {0, POLL_NS};
        nanosleep(&poll, NULL);
    }
    return false;
}

static rwkvc_status move_all(rwkvc_private_weights *pw) {
    rwkvc_status st = RWKVC_OK;
    for (size_t page = pw->begin; page < pw->end && st == RWKVC_OK;) {
        if (atomic_load(&pw->stop) || (pw->wait_idle && !wait_until_idle(pw))) {
            break;
        }
        if (page_skipped(pw, page)) {
            page += RWKVC_HUGE_PAGE;
            continue;
        }
        size_t end = run_end(pw, page);
        st = rwkvc_gguf_make_private(pw->g, page, end - page);
        if (st == RWKVC_OK) {
            atomic_fetch_add(&pw->moved, (uint64_t)(end - page));
        }
        page = end;
    }
    return st;
}

static void *mover_main(void *arg) {
#if defined(SCHED_IDLE)
    /* Run only when a core is otherwise idle: the move must never slow down a reply being generated. In a chat
       it happens while the user reads and types. */
    struct sched_param idle = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
#endif
    /* A failure leaves the rest of the weights mapped, which is correct, only slower. */
    (void)move_all(arg);
    return NULL;
}

uint64_t rwkvc_private_weights_plan(const rwkvc_gguf *g, size_t skip_begin, size_t skip_end, size_t *begin,
                                    size_t *end) {
    *begin = (size_t)g->data_offset / RWKVC_HUGE_PAGE * RWKVC_HUGE_PAGE;
    *end = g->size;
    uint64_t total = 0;
    rwkvc_private_weights probe = {.begin = *begin, .end = *end, .skip_begin = skip_begin, .skip_end = skip_end};
    for (size_t page = *begin; page < *end; page += RWKVC_HUGE_PAGE) {
        if (!page_skipped(&probe, page)) {
            total += page + RWKVC_HUGE_PAGE <= *end ? RWKVC_HUGE_PAGE : *end - page;
        }
    }
    return total;
}

rwkvc_status rwkvc_private_weights_start(rwkvc_gguf *g, size_t skip_begin, size_t skip_end, bool background,
                                         rwkvc_private_weights **out) {
    rwkvc_private_weights *pw = calloc(1, sizeof(*pw));
    if (!pw) {
        return rwkvc_fail(RWKVC_ERR_NOMEM, "out of memory");
    }
    pw->g = g;
    pw->skip_begin = skip_begin;
    pw->skip_end = skip_end;
    pw->total = rwkvc_private_weights_plan(g, skip_begin, skip_end, &pw->begin, &pw->end);
    atomic_init(&pw->moved, 0);
    atomic_init(&pw->stop, false);
    atomic_init(&pw->running, 0);
    atomic_init(&pw->last_end_ns, now_ns());
    pw->wait_idle = background;
    pthread_mutex_init(&pw->join_lock, NULL);
    if (background) {
        /* Without a thread the weights simply stay mapped. */
        pw->has_thread = pthread_create(&pw->thread, NULL, mover_main, pw) == 0;
        *out = pw;
        return RWKVC_OK;
    }
    rwkvc_status st = move_all(pw);
    if (st != RWKVC_OK) {
        rwkvc_private_weights_free(pw);
        return st;
    }
    *out = pw;
    return RWKVC_OK;
}

void rwkvc_private_weights_eval_begin(rwkvc_private_weights *pw) {
    if (pw) {
        atomic_fetch_add(&pw->running, 1);
    }
}

void rwkvc_private_weights_eval_end(rwkvc_private_weights *pw) {
    if (pw) {
        atomic_store(&pw->last_end_ns, now_ns());
        atomic_fetch_sub(&pw->running, 1);
    }
}

static void join_mover(rwkvc_private_weights *pw) {
    pthread_mutex_lock(&pw->join_lock);
    if (pw->has_thread) {
        pthread_join(pw->thread, NULL);
        pw->has_thread = false;
    }
    pthread_mutex_unlock(&pw->join_lock);
}

void rwkvc_private_weights_progress(rwkvc_private_weights *pw, bool wait, uint64_t *moved, uint64_t *total) {
    if (wait) {
        join_mover(pw);
    }
    *moved = atomic_load(&pw->moved);
    *total = pw->total;
}

void rwkvc_private_weights_free(rwkvc_private_weights *pw) {
    if (!pw) {
        return;
    }
    atomic_store(&pw->stop, true);
    join_mover(pw);
    pthread_mutex_destroy(&pw->join_lock);
    free(pw);
}
