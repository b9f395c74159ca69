/*
 * quant_ref.c: block-quantized types, scalar reference. PLACEHOLDER until the quantization work lands:
 * it registers no types, so quantized files are refused with a clear message.
 */
#include "kernels.h"
#include "status.h"

const rwkvc_type_traits *rwkvc_quant_traits(uint32_t type) {
    (void)type;
    return NULL;
}

const rwkvc_matmul_kernels *rwkvc_quant_kernels_ref(uint32_t type) {
    (void)type;
    return NULL;
}

#if defined(RWKVC_X86)
const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx2(uint32_t type) {
    (void)type;
    return NULL;
}

const rwkvc_matmul_kernels *rwkvc_quant_kernels_avx512(uint32_t type) {
    (void)type;
    return NULL;
}
#endif

#if defined(RWKVC_ARM)
const rwkvc_matmul_kernels *rwkvc_quant_kernels_neon(uint32_t type) {
    (void)type;
    return NULL;
}
#endif

RWKVC_API rwkvc_status rwkvc_type_info(uint32_t type, const char **name, size_t *block_size, size_t *block_bytes) {
    rwkvc_clear_error();
    const rwkvc_type_traits *t = rwkvc_type_traits_get(type);
    if (!t) {
        return rwkvc_fail(RWKVC_ERR_ARG, "unknown tensor type %u", type);
    }
    if (name) {
        *name = t->name;
    }
    if (block_size) {
        *block_size = t->block_size;
    }
    if (block_bytes) {
        *block_bytes = t->block_bytes;
    }
    return RWKVC_OK;
}

RWKVC_API rwkvc_status rwkvc_quantize(uint32_t type, const float *src, size_t n_rows, size_t row_len, void *dst,
                                      size_t dst_len) {
    (void)src; (void)n_rows; (void)row_len; (void)dst; (void)dst_len;
    rwkvc_clear_error();
    return rwkvc_fail(RWKVC_ERR_ARG, "quantization to type %u is not implemented yet", type);
}

RWKVC_API rwkvc_status rwkvc_dequantize(uint32_t type, const void *src, size_t src_len, float *dst, size_t n) {
    (void)src; (void)src_len; (void)dst; (void)n;
    rwkvc_clear_error();
    return rwkvc_fail(RWKVC_ERR_ARG, "dequantization of type %u is not implemented yet", type);
}
