/*
 * cpu.h: CPU feature flags (cpuid + OS support via xgetbv) and the float-type traits, beside kernels.h.
 *
 * Quantized kernels that need an extension beyond their ISA level (AVX512_VNNI, AVX512_BF16) check
 * rwkvc_cpu_features() before using it.
 */
#ifndef RWKVC_CPU_H
#define RWKVC_CPU_H

#include <stdint.h>

#include "kernels.h"

typedef struct {
    int avx2;        /* AVX2 with FMA, F16C and OS-enabled YMM state. */
    int fma;
    int f16c;
    int avx512;      /* AVX-512 F + BW + VL + DQ with OS-enabled ZMM/opmask state. */
    int avx512_vnni;
    int avx512_bf16;
    int amx_int8;    /* AMX-TILE + AMX-INT8, tile state enabled by the OS and granted to this process. */
    int amx_bf16;    /* AMX-TILE + AMX-BF16, likewise. */
    int neon;
    /*
     * 1 when the CPU says its cores are all of one kind: x86 without the hybrid flag (CPUID.07H:EDX[15]). 0 on
     * hybrid parts and where it is not known (other CPUs; big.LITTLE is common on ARM).
     */
    int uniform_cores;
} rwkvc_cpu_flags;

/* The 64-byte AMX tile configuration of ldtilecfg (palette 1), for the AMX GEMMs (kernels_avx512.c, quant_avx512.c). */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16]; /* Bytes per row of each tile. */
    uint8_t rows[16];   /* Rows of each tile. */
} rwkvc_amx_tile_config;

/* Flags of this CPU, detected once (thread-safe). */
const rwkvc_cpu_flags *rwkvc_cpu_features(void);

/* Traits of f32, f16, bf16 (kernels_ref.c); NULL for other types. */
const rwkvc_type_traits *rwkvc_float_traits(uint32_t type);

/*
 * The instruction set to use now: rwkvc_isa_detect(), or scalar when RWKVC_FORCE_SCALAR=1 is set, or the level
 * named by RWKVC_ISA ("scalar", "avx2", ...) when this CPU supports it (a testing aid).
 */
rwkvc_isa rwkvc_isa_select(void);

#endif /* RWKVC_CPU_H */
