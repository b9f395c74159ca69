/*
 * status.h: the per-thread error message behind rwkvc_last_error().
 */
#ifndef RWKVC_STATUS_H
#define RWKVC_STATUS_H

#include "rwkvc.h"

/* Records a printf-style detail message for this thread and returns s, so callers write
   `return rwkvc_fail(RWKVC_ERR_FORMAT, "tensor %s: ...", name);`. */
rwkvc_status rwkvc_fail(rwkvc_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears this thread's message; public entry points call it first. */
void rwkvc_clear_error(void);

#endif /* RWKVC_STATUS_H */
