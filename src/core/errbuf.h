/*
 * core/errbuf.h — the message buffer each handle keeps (internal).
 *
 * A handle embeds one vmt_errbuf; failing calls fill it with
 * vmt_errbuf_set(), which returns the status so `return vmt_errbuf_set(...)`
 * reads naturally. Messages are truncated, never overflow.
 */
#ifndef VMT_CORE_ERRBUF_H
#define VMT_CORE_ERRBUF_H

#include <stdarg.h>

#include "vmtrap/status.h"

#define VMT_ERRBUF_LEN 256

typedef struct vmt_errbuf {
    vmt_status status;
    char msg[VMT_ERRBUF_LEN];
} vmt_errbuf;

vmt_status vmt_errbuf_set(vmt_errbuf *e, vmt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
vmt_status vmt_errbuf_vset(vmt_errbuf *e, vmt_status status, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
void vmt_errbuf_clear(vmt_errbuf *e);
/* Copy a message into a caller's (why, why_len) buffer; tolerates NULL. */
void vmt_why(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
