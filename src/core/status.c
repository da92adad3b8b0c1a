/*
 * core/status.c — status words and the per-handle message buffer.
 */
#include <stdio.h>
#include <string.h>

#include "core/errbuf.h"
#include "vmtrap/access.h"

static const char *const status_words[VMT_STATUS_COUNT] = {
    [VMT_OK] = "success",
    [VMT_E_INVAL] = "invalid argument",
    [VMT_E_NOMEM] = "out of memory",
    [VMT_E_NOTSUP] = "not supported by the driver",
    [VMT_E_NOTFOUND] = "not found",
    [VMT_E_EXISTS] = "already exists",
    [VMT_E_CONFLICT] = "conflicts with existing state",
    [VMT_E_NOT_PRESENT] = "translation not present",
    [VMT_E_BAD_PT] = "malformed guest page table",
    [VMT_E_RANGE] = "address out of range",
    [VMT_E_DRIVER] = "driver call failed",
    [VMT_E_IO] = "host I/O error",
    [VMT_E_FORMAT] = "malformed input",
    [VMT_E_TIMEOUT] = "timed out",
    [VMT_E_STOPPED] = "stopped",
    [VMT_E_BUSY] = "busy",
    [VMT_E_INJECTED] = "injected failure",
    [VMT_E_INTERNAL] = "internal error",
};

const char *vmt_strerror(vmt_status status)
{
    if ((unsigned)status >= VMT_STATUS_COUNT || !status_words[status])
        return "unknown status";
    return status_words[status];
}

vmt_status vmt_errbuf_vset(vmt_errbuf *e, vmt_status status, const char *fmt, va_list ap)
{
    if (e) {
        e->status = status;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    }
    return status;
}

vmt_status vmt_errbuf_set(vmt_errbuf *e, vmt_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmt_errbuf_vset(e, status, fmt, ap);
    va_end(ap);
    return status;
}

void vmt_errbuf_clear(vmt_errbuf *e)
{
    e->status = VMT_OK;
    e->msg[0] = 0;
}

void vmt_why(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || why_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

const char *vmt_access_str(vmt_access access, char buf[4])
{
    buf[0] = (access & VMT_ACCESS_R) ? 'r' : '-';
    buf[1] = (access & VMT_ACCESS_W) ? 'w' : '-';
    buf[2] = (access & VMT_ACCESS_X) ? 'x' : '-';
    buf[3] = 0;
    return buf;
}
