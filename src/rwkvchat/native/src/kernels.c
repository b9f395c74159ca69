/*
 * kernels.c: run-time CPU feature detection and the kernel dispatcher.
 *
 * Detection uses cpuid plus xgetbv, because a CPU may support AVX/AVX-512 while the OS does not save the
 * wider registers (then using them would corrupt state). rwkvc_matmul_get walks down from the requested
 * instruction set to scalar and, at each level, asks the float registry, then the quantized registry.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "cpu.h"
#include "kernels.h"
#include "rwkvc.h"

#if defined(RWKVC_X86)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

/*
 * Linux hands out the AMX tile-data state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, feature 18,
 * XTILEDATA; kernel 5.16 on); without it the first tile instruction kills the process. Granted to the whole
 * process, so asking once before any thread uses a tile is enough.
 */
static int request_amx(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

static uint64_t read_xcr0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static void detect(rwkvc_cpu_flags *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return;
    }
    int osxsave = (c >> 27) & 1;
    int avx = (c >> 28) & 1;
    f->fma = (c >> 12) & 1;
    f->f16c = (c >> 29) & 1;
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    /* XCR0 bits 1 (SSE) and 2 (AVX upper halves) must both be enabled by the OS. */
    int os_ymm = (xcr0 & 0x6) == 0x6;
    /* Bits 5-7: opmask, upper ZMM0-15, ZMM16-31. */
    int os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) {
        return;
    }
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int avx512f = (b >> 16) & 1;
    int avx512dq = (b >> 17) & 1;
    int avx512bw = (b >> 30) & 1;
    int avx512vl = (b >> 31) & 1;
    int vnni = (c >> 11) & 1;
    int amx_tile = (d >> 24) & 1;
    int amx_int8 = (d >> 25) & 1;
    int amx_bf16 = (d >> 22) & 1;
    f->uniform_cores = !((d >> 15) & 1);
    unsigned max_sub = a;
    int bf16 = 0;
    if (max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        bf16 = (a >> 5) & 1;
    }
    f->avx2 = avx && avx2 && f->fma && f->f16c && os_ymm;
    f->avx512 = f->avx2 && avx512f && avx512dq && avx512bw && avx512vl && os_zmm;
    f->avx512_vnni = f->avx512 && vnni;
    f->avx512_bf16 = f->avx512 && bf16;
    /* XCR0 bits 17-18: tile configuration and tile data, enabled by the OS. */
    int os_amx = amx_tile && (xcr0 & 0x60000) == 0x60000 && request_amx();
    f->amx_int8 = f->avx512_vnni && os_amx && amx_int8;
    f->amx_bf16 = f->avx512_bf16 && os_amx && amx_bf16;
    if (!os_ymm) {
        f->fma = 0;
        f->f16c = 0;
    }
}
#elif defined(RWKVC_ARM) && defined(__aarch64__)
static void detect(rwkvc_cpu_flags *f) {
    /* Advanced SIMD (with fp16 conversions) is mandatory on AArch64. */
    f->neon = 1;
}
#else
static void detect(rwkvc_cpu_flags *f) {
    (void)f;
}
#endif

static rwkvc_cpu_flags g_flags;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect_once(void) {
    memset(&g_flags, 0, sizeof(g_flags));
    detect(&g_flags);
}

const rwkvc_cpu_flags *rwkvc_cpu_features(void) {
    pthread_once(&g_once, detect_once);
    return &g_flags;
}

rwkvc_isa rwkvc_isa_detect(void) {
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
    if (f->avx512) {
        return RWKVC_ISA_AVX512;
    }
    if (f->avx2) {
        return RWKVC_ISA_AVX2;
    }
    if (f->neon) {
        return RWKVC_ISA_NEON;
    }
    return RWKVC_ISA_SCALAR;
}

rwkvc_isa rwkvc_isa_select(void) {
    const char *s = getenv("RWKVC_FORCE_SCALAR");
    if (s && s[0] && strcmp(s, "0") != 0) {
        return RWKVC_ISA_SCALAR;
    }
    rwkvc_isa best = rwkvc_isa_detect();
    /* RWKVC_ISA=avx2 (or scalar, ...) caps the level, so lower paths can be tested on a newer CPU. */
    const char *cap = getenv("RWKVC_ISA");
    if (cap && cap[0]) {
        for (int i = RWKVC_ISA_SCALAR; i <= RWKVC_ISA_NEON; i++) {
            int supported = i == RWKVC_ISA_SCALAR || i == (int)best ||
                            (best == RWKVC_ISA_AVX512 && i == RWKVC_ISA_AVX2);
            if (supported && strcmp(cap, rwkvc_isa_name((rwkvc_isa)i)) == 0) {
                return (rwkvc_isa)i;
            }
        }
    }
    return best;
}

const char *rwkvc_isa_name(rwkvc_isa isa) {
    switch (isa) {
    case RWKVC_ISA_SCALAR: return "scalar";
    case RWKVC_ISA_AVX2: return "avx2";
    case RWKVC_ISA_AVX512: return "avx512";
    case RWKVC_ISA_NEON: return "neon";
    }
    return "unknown";
}

const rwkvc_type_traits *rwkvc_type_traits_get(uint32_t type) {
    const rwkvc_type_traits *t = rwkvc_float_traits(type);
    if (t) {
        return t;
    }
    return rwkvc_quant_traits(type);
}

/* The registries of one level, float first; NULL when the level has none for the type or is not built. */
static const rwkvc_matmul_kernels *level_get(uint32_t type, rwkvc_isa isa) {
    const rwkvc_matmul_kernels *k = NULL;
    switch (isa) {
    case RWKVC_ISA_SCALAR:
        k = rwkvc_float_kernels_ref(type);
        if (!k) {
            k = rwkvc_quant_kernels_ref(type);
        }
        break;
#if defined(RWKVC_X86)
    case RWKVC_ISA_AVX2:
        k = rwkvc_float_kernels_avx2(type);
        if (!k) {
            k = rwkvc_quant_kernels_avx2(type);
        }
        break;
    case RWKVC_ISA_AVX512:
        k = rwkvc_float_kernels_avx512(type);
        if (!k) {
            k = rwkvc_quant_kernels_avx512(type);
        }
        break;
#endif
#if defined(RWKVC_ARM)
    case RWKVC_ISA_NEON:
        k = rwkvc_float_kernels_neon(type);
        if (!k) {
            k = rwkvc_quant_kernels_neon(type);
        }
        break;
#endif
    default:
        break;
    }
    return k;
}

const rwkvc_matmul_kernels *rwkvc_matmul_get(uint32_t type, rwkvc_isa isa) {
    /* Fallback order: the requested level, the x86 level below it, then scalar. */
    rwkvc_isa chain[3] = {isa, RWKVC_ISA_SCALAR, RWKVC_ISA_SCALAR};
    if (isa == RWKVC_ISA_AVX512) {
        chain[1] = RWKVC_ISA_AVX2;
    }
    for (int i = 0; i < 3; i++) {
        const rwkvc_matmul_kernels *k = level_get(type, chain[i]);
        if (k) {
            return k;
        }
    }
    return NULL;
}

static long n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

static _Thread_local char g_sysinfo[256];

RWKVC_API const char *rwkvc_system_info(void) {
    const rwkvc_cpu_flags *f = rwkvc_cpu_features();
#if defined(RWKVC_WITH_CUDA)
    int cuda = 1;
#else
    int cuda = 0;
#endif
    snprintf(g_sysinfo, sizeof(g_sysinfo),
             "AVX2=%d AVX512=%d AVX512_VNNI=%d AVX512_BF16=%d AMX_INT8=%d AMX_BF16=%d F16C=%d FMA=%d NEON=%d CUDA=%d "
             "UNIFORM_CORES=%d kernels=%s threads=%ld",
             f->avx2, f->avx512, f->avx512_vnni, f->avx512_bf16, f->amx_int8, f->amx_bf16, f->f16c, f->fma, f->neon,
             cuda, f->uniform_cores, rwkvc_isa_name(rwkvc_isa_select()), n_cpus());
    return g_sysinfo;
}
