/*
 * monitor/hit.c — reading a hook hit's arguments and guest memory.
 *
 * Design: every read goes through the session (frame cache + V2P cache over
 * the guest's own page tables) under the root of the vCPU that hit, so what
 * the monitor shows is what the guest would see at that instant. Strings are
 * read page by page so that when a page on the way is not present the bytes
 * before it are kept and the first unreadable address is reported; the
 * caller's buffer always ends with a NUL. Nothing read from the guest sizes
 * anything: lengths are the caller's.
 */
#include <string.h>

#include "monitor/monitor_internal.h"

vmt_status vmt_hit_arg(const vmt_hit *hit, unsigned n, uint64_t *value)
{
    if (!hit || !value)
        return VMT_E_INVAL;
    *value = 0;
    if (n < 6) {
        *value = vmt_regs_sysv_arg(&hit->regs, n);
        return VMT_OK;
    }
    if (hit->is_return)
        return VMT_E_INVAL; /* stack arguments are gone after the return */
    /* At entry [rsp] is the return address; argument 6 is at rsp + 8. */
    if (n > 64)
        return VMT_E_RANGE;
    vmt_va at = hit->regs.rsp + 8 + 8ULL * (n - 6);
    return vmt_hit_read(hit, at, value, sizeof *value, NULL);
}

vmt_status vmt_hit_read(const vmt_hit *hit, vmt_va va, void *buf, size_t len, size_t *done)
{
    if (done)
        *done = 0;
    if (!hit || !hit->monitor || (!buf && len))
        return VMT_E_INVAL;
    vmt_session *s = hit->monitor->session;
    return vmt_session_read_va(s, vmt_addr_ctx_make(va, hit->root), buf, len, done);
}

vmt_status vmt_hit_read_str(const vmt_hit *hit, vmt_va va, char *buf, size_t max, vmt_va *fault_va)
{
    if (fault_va)
        *fault_va = 0;
    if (!hit || !hit->monitor || !buf || max == 0)
        return VMT_E_INVAL;
    buf[0] = 0;
    vmt_session *s = hit->monitor->session;
    size_t got = 0;
    while (got + 1 < max) {
        vmt_va at = va + got;
        if (at < va) /* wrapped around the address space */
            return VMT_E_RANGE;
        size_t chunk = (size_t)(VMT_PAGE_SIZE - vmt_page_offset(at));
        if (chunk > max - 1 - got)
            chunk = max - 1 - got;
        size_t done = 0;
        vmt_status st = vmt_session_read_va(s, vmt_addr_ctx_make(at, hit->root), buf + got, chunk, &done);
        if (st != VMT_OK) {
            if (done > chunk)
                done = chunk;
            void *nul = memchr(buf + got, 0, done);
            if (nul) /* the string ended before the bad page */
                return VMT_OK;
            buf[got + done] = 0;
            if (fault_va)
                *fault_va = at + done;
            return st;
        }
        void *nul = memchr(buf + got, 0, chunk);
        if (nul)
            return VMT_OK;
        got += chunk;
    }
    buf[max - 1] = 0;
    return VMT_OK;
}
