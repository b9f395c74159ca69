/*
 * fuzz_coverage.c: edge coverage for coverage-guided fuzzing with any compiler (built only with the CMake
 * option RWKVC_FUZZ_COVERAGE).
 *
 * Why: libFuzzer's own instrumentation (-fsanitize=fuzzer) needs clang, which a fresh machine with only gcc
 * lacks. gcc and clang both have -fsanitize-coverage=trace-pc, which calls __sanitizer_cov_trace_pc() at
 * the start of every basic block of the library. This file turns those calls into AFL-style edge counters
 * (hash of the previous and the current block's return address) in one fixed table, and
 * rwkvc_fuzz_coverage() hands the table to the fuzzer: fuzz/_harness.py registers it with the libFuzzer
 * that the atheris wheel carries (__sanitizer_cov_8bit_counters_init / __sanitizer_cov_pcs_init), so
 * libFuzzer keeps inputs that reach new edges of the C code, exactly as with clang's inline 8-bit counters.
 *
 * Counters are bytes that wrap, as libFuzzer's are. `prev_block` is not thread-local: the fuzz harnesses
 * run one thread, and a race among pool workers could only blur a hash, never corrupt memory.
 */
#include <stddef.h>
#include <stdint.h>

#include "rwkvc.h"

#if defined(__clang__)
#define RWKVC_NO_COVERAGE __attribute__((no_sanitize("coverage", "address", "undefined")))
#else
#define RWKVC_NO_COVERAGE __attribute__((no_sanitize_coverage, no_sanitize("address", "undefined")))
#endif

/* 2^16 edges: the library has a few thousand basic blocks, so collisions are rare. */
#define EDGE_TABLE_BITS 16
#define EDGE_TABLE_SIZE ((size_t)1 << EDGE_TABLE_BITS)

static uint8_t edge_counters[EDGE_TABLE_SIZE];
/* libFuzzer's PC table: one (pc, flags) pair per counter. Edges have no single pc, so the index stands in. */
static uintptr_t edge_pcs[2 * EDGE_TABLE_SIZE];
static uintptr_t prev_block;

RWKVC_NO_COVERAGE void __sanitizer_cov_trace_pc(void);
RWKVC_NO_COVERAGE void __sanitizer_cov_trace_pc(void) {
    uintptr_t block = (uintptr_t)__builtin_return_address(0);
    block = (block ^ (block >> 17)) * (uintptr_t)0x9E3779B97F4A7C15ull; /* spread nearby addresses */
    edge_counters[(block ^ prev_block) >> (8 * sizeof(uintptr_t) - EDGE_TABLE_BITS)]++;
    prev_block = block >> 1; /* shifted so A->B and B->A are different edges */
}

/* Not in rwkvc.h: a test hook, exported only from fuzz-coverage builds (fuzz/_harness.py looks it up). */
RWKVC_API RWKVC_NO_COVERAGE void rwkvc_fuzz_coverage(uint8_t **counters_begin, uint8_t **counters_end,
                                                     uintptr_t **pcs_begin, uintptr_t **pcs_end);
RWKVC_API RWKVC_NO_COVERAGE void rwkvc_fuzz_coverage(uint8_t **counters_begin, uint8_t **counters_end,
                                                     uintptr_t **pcs_begin, uintptr_t **pcs_end) {
    for (size_t i = 0; i < EDGE_TABLE_SIZE; i++) {
        edge_pcs[2 * i] = i + 1;
        edge_pcs[2 * i + 1] = 0;
    }
    *counters_begin = edge_counters;
    *counters_end = edge_counters + EDGE_TABLE_SIZE;
    *pcs_begin = edge_pcs;
    *pcs_end = edge_pcs + 2 * EDGE_TABLE_SIZE;
}
