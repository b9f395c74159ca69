/*
 * status.c: status names and the thread-local error message.
 */
#include <stdarg.h>
#include <stdio.h>

#include "status.h"

/* 512 bytes holds any message we build (names are capped at 64 bytes by the GGUF reader). */
static _Thread_local char last_error[512];

rwkvc_status rwkvc_fail(rwkvc_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
    return s;
}

void rwkvc_clear_error(void) {
    last_error[0] = '\0';
}

RWKVC_API const char *rwkvc_last_error(void) {
    return last_error;
}

RWKVC_API uint32_t rwkvc_abi_version(void) {
    return RWKVC_ABI_VERSION;
}

RWKVC_API const char *rwkvc_status_str(rwkvc_status s) {
    switch (s) {
    case RWKVC_OK: return "ok";
    case RWKVC_ERR_ARG: return "invalid argument";
    case RWKVC_ERR_IO: return "i/o error";
    case RWKVC_ERR_FORMAT: return "invalid model file";
    case RWKVC_ERR_VERSION: return "unsupported version";
    case RWKVC_ERR_NOMEM: return "out of memory";
    case RWKVC_ERR_SIZE: return "wrong buffer size";
    case RWKVC_ERR_BACKEND: return "backend unavailable";
    case RWKVC_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}
