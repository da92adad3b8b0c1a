/*
 * core/session.c — a session: driver + caches + arbiter + event loop
 * (see vmtrap/session.h).
 *
 * Design:
 *  - Memory: physical reads go page by page through the frame cache;
 *    virtual accesses translate every page through the V2P cache (walking
 *    with the paging walker over the frame cache on a miss). Writes go
 *    straight to the driver and flush both caches. write_va translates all
 *    pages before writing any, so a not-present page writes nothing.
 *  - Paging config: from vCPU 0 at create (CR4.LA57, EFER.NXE, the
 *    driver's maxphyaddr) and then from the registers of every event whose
 *    vCPU has paging on, until the user pins it with set_paging.
 *  - Event loop: wait (one slice) -> flush caches -> handler -> respond ->
 *    flush. The stop flag (and the signalfd, when enabled) is checked only
 *    between a response and the next wait, so a stop never strands a vCPU
 *    between an event and its response. A handler failure still answers
 *    the event (with CONTINUE, whatever the handler had filled in) before
 *    run() returns the handler's status.
 *  - Signals: stop_on_signals blocks SIGINT/SIGTERM in the calling thread
 *    and reads them from a non-blocking signalfd once per loop slice.
 *    destroy drains pending ones (so unblocking cannot kill the process) and
 *    unblocks only the signals this session blocked.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "core/session_internal.h"

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag must be lock-free to be async-signal-safe");

#define DEFAULT_FRAMES 64
#define DEFAULT_V2P 1024
#define DEFAULT_SLICE_MS 100
#define MAX_FRAMES 65536

static void detect_paging(vmt_session *s, const vmt_regs *r)
{
    s->paging.levels = (r->cr4 & VMT_CR4_LA57) ? 5 : 4;
    s->paging.nxe = (r->efer & VMT_EFER_NXE) != 0;
}

vmt_status vmt_session_create(vmt_driver *drv, const vmt_session_config *cfg, vmt_session **out)
{
    if (!out) {
        vmt_driver_destroy(drv);
        return VMT_E_INVAL;
    }
    *out = NULL;
    if (!drv)
        return VMT_E_INVAL;
    vmt_session_config c = cfg ? *cfg : (vmt_session_config){ 0 };
    if (c.event_timeout_ms < 0 || c.frame_cache_frames > MAX_FRAMES) {
        vmt_driver_destroy(drv);
        return VMT_E_INVAL;
    }
    if (!c.frame_cache_frames)
        c.frame_cache_frames = DEFAULT_FRAMES;
    if (!c.v2p_cache_entries)
        c.v2p_cache_entries = DEFAULT_V2P;
    if (!c.event_timeout_ms)
        c.event_timeout_ms = DEFAULT_SLICE_MS;
    vmt_session *s = calloc(1, sizeof *s);
    if (!s) {
        vmt_driver_destroy(drv);
        return VMT_E_NOMEM;
    }
    s->drv = drv;
    s->cfg = c;
    s->sigfd = -1;
    atomic_init(&s->stop, 0);
    vmt_hmap_init(&s->arb.map, sizeof(vmt_arb_key), sizeof(vmt_arb_entry));
    vmt_v2p_cache_init(&s->v2p, c.v2p_cache_entries);
    if (vmt_frame_cache_init(&s->frames, c.frame_cache_frames) != VMT_OK) {
        vmt_session_destroy(s);
        return VMT_E_NOMEM;
    }
    s->paging.levels = 4;
    s->paging.nxe = 1;
    s->paging.maxphyaddr = vmt_driver_caps(drv)->maxphyaddr;
    if (s->paging.maxphyaddr < 32 || s->paging.maxphyaddr > 52)
        s->paging.maxphyaddr = 0; /* 52 */
    if (vmt_driver_has(drv, VMT_CAP_REGS_GET)) {
        vmt_regs r;
        if (vmt_drv_get_regs(drv, 0, &r) == VMT_OK)
            detect_paging(s, &r);
    }
    *out = s;
    return VMT_OK;
}

void vmt_session_destroy(vmt_session *s)
{
    if (!s)
        return;
    if (s->sigfd >= 0) {
        /* Drain what arrived, then unblock only what we blocked. */
        struct signalfd_siginfo si;
        while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        }
        close(s->sigfd);
        pthread_sigmask(SIG_UNBLOCK, &s->sig_unblock, NULL);
    }
    vmt_frame_cache_free(&s->frames);
    vmt_v2p_cache_free(&s->v2p);
    vmt_hmap_free(&s->arb.map);
    vmt_driver_destroy(s->drv);
    free(s);
}

vmt_driver *vmt_session_driver(vmt_session *s) { return s->drv; }
const char *vmt_session_error(const vmt_session *s) { return s->err.msg; }
const vmt_paging_config *vmt_session_paging(const vmt_session *s) { return &s->paging; }

void vmt_session_set_paging(vmt_session *s, const vmt_paging_config *cfg)
{
    s->paging = *cfg;
    s->paging_pinned = 1;
    vmt_v2p_cache_flush(&s->v2p);
}

void vmt_session_flush_frames(vmt_session *s) { vmt_frame_cache_flush(&s->frames); }
void vmt_session_flush_v2p(vmt_session *s) { vmt_v2p_cache_flush(&s->v2p); }

static void flush_all(vmt_session *s)
{
    vmt_frame_cache_flush(&s->frames);
    vmt_v2p_cache_flush(&s->v2p);
}

/* ---- physical memory ---- */

vmt_status vmt_session_read_pa(vmt_session *s, vmt_pa pa, void *buf, size_t len)
{
    uint8_t *out = buf;
    if (len && pa + len - 1 < pa)
        return vmt_errbuf_set(&s->err, VMT_E_RANGE, "read of %zu bytes at pa 0x%" PRIx64 " wraps around", len, pa);
    while (len) {
        size_t off = (size_t)vmt_page_offset(pa);
        size_t chunk = VMT_PAGE_SIZE - off < len ? VMT_PAGE_SIZE - off : len;
        vmt_status st;
        const uint8_t *frame = vmt_frame_cache_get(&s->frames, s->drv, vmt_pa_to_gfn(pa), &st);
        if (!frame)
            return vmt_errbuf_set(&s->err, st, "reading pa 0x%" PRIx64 ": %s", pa, vmt_driver_error(s->drv));
        memcpy(out, frame + off, chunk);
        out += chunk;
        pa += chunk;
        len -= chunk;
    }
    return VMT_OK;
}

vmt_status vmt_session_write_pa(vmt_session *s, vmt_pa pa, const void *buf, size_t len)
{
    vmt_status st = vmt_drv_write_phys(s->drv, pa, buf, len);
    flush_all(s); /* also after a failure: part of it may have landed */
    if (st)
        return vmt_errbuf_set(&s->err, st, "writing %zu bytes at pa 0x%" PRIx64 ": %s", len, pa,
                              vmt_driver_error(s->drv));
    return VMT_OK;
}

static vmt_status cached_read(void *ctx, vmt_pa pa, void *buf, size_t len)
{
    vmt_session *s = ctx;
    return vmt_session_read_pa(s, pa, buf, len);
}

vmt_phys_reader vmt_session_reader(vmt_session *s)
{
    vmt_phys_reader r = { cached_read, s };
    return r;
}

/* ---- virtual memory ---- */

vmt_status vmt_session_translate(vmt_session *s, vmt_addr_ctx ctx, vmt_walk *walk)
{
    vmt_pa root = ctx.root & VMT_CR3_ADDR_MASK;
    if (vmt_v2p_cache_lookup(&s->v2p, root, ctx.va, walk))
        return VMT_OK;
    vmt_phys_reader r = vmt_session_reader(s);
    char why[VMT_ERRBUF_LEN];
    vmt_status st = vmt_paging_walk(&r, &s->paging, root, ctx.va, walk, why, sizeof why);
    if (st)
        return vmt_errbuf_set(&s->err, st, "%s", why);
    vmt_v2p_cache_insert(&s->v2p, root, walk);
    return VMT_OK;
}

vmt_status vmt_session_va_to_pa(vmt_session *s, vmt_addr_ctx ctx, vmt_pa *pa)
{
    vmt_walk w;
    vmt_status st = vmt_session_translate(s, ctx, &w);
    if (st == VMT_OK)
        *pa = w.pa;
    return st;
}

vmt_status vmt_session_read_va(vmt_session *s, vmt_addr_ctx ctx, void *buf, size_t len, size_t *done)
{
    uint8_t *out = buf;
    size_t got = 0;
    vmt_status st = VMT_OK;
    while (got < len) {
        vmt_va va = ctx.va + got;
        size_t chunk = VMT_PAGE_SIZE - (size_t)vmt_page_offset(va);
        if (chunk > len - got)
            chunk = len - got;
        vmt_pa pa;
        st = vmt_session_va_to_pa(s, vmt_addr_ctx_make(va, ctx.root), &pa);
        if (st)
            break;
        if ((st = vmt_session_read_pa(s, pa, out + got, chunk)))
            break;
        got += chunk;
    }
    if (done)
        *done = got;
    return st;
}

vmt_status vmt_session_write_va(vmt_session *s, vmt_addr_ctx ctx, const void *buf, size_t len)
{
    /* Translate every page first, so a hole writes nothing. */
    if (len > VMT_SIZE_1G)
        return vmt_errbuf_set(&s->err, VMT_E_RANGE, "write_va: %zu bytes is more than 1 GiB", len);
    const uint8_t *in = buf;
    size_t npages = len ? (size_t)((vmt_page_offset(ctx.va) + len + VMT_PAGE_SIZE - 1) / VMT_PAGE_SIZE) : 0;
    vmt_pa small[8];
    vmt_pa *pas = npages <= 8 ? small : malloc(npages * sizeof *pas);
    if (!pas)
        return vmt_errbuf_set(&s->err, VMT_E_NOMEM, "write_va: out of memory for %zu pages", npages);
    vmt_status st = VMT_OK;
    for (size_t i = 0; i < npages && !st; i++) {
        vmt_va va = i == 0 ? ctx.va : (ctx.va & VMT_PAGE_MASK) + i * VMT_PAGE_SIZE;
        st = vmt_session_va_to_pa(s, vmt_addr_ctx_make(va, ctx.root), &pas[i]);
    }
    size_t put = 0;
    for (size_t i = 0; i < npages && !st; i++) {
        size_t off = (size_t)vmt_page_offset(pas[i]);
        size_t chunk = VMT_PAGE_SIZE - off < len - put ? VMT_PAGE_SIZE - off : len - put;
        st = vmt_session_write_pa(s, pas[i], in + put, chunk);
        put += chunk;
    }
    if (pas != small)
        free(pas);
    return st;
}

vmt_status vmt_session_read_str(vmt_session *s, vmt_addr_ctx ctx, char *buf, size_t max)
{
    if (!buf || max == 0)
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "read_str: empty buffer");
    size_t got = 0;
    buf[0] = 0;
    while (got < max - 1) {
        vmt_va va = ctx.va + got;
        size_t chunk = VMT_PAGE_SIZE - (size_t)vmt_page_offset(va);
        if (chunk > max - 1 - got)
            chunk = max - 1 - got;
        size_t done = 0;
        vmt_status st = vmt_session_read_va(s, vmt_addr_ctx_make(va, ctx.root), buf + got, chunk, &done);
        buf[got + done] = 0;
        if (st)
            return st;
        size_t n = strnlen(buf + got, chunk);
        if (n < chunk)
            return VMT_OK;
        got += chunk;
    }
    buf[max - 1] = 0;
    return vmt_errbuf_set(&s->err, VMT_E_RANGE, "read_str: no NUL within %zu bytes at va 0x%" PRIx64, max - 1,
                          ctx.va);
}

/* ---- event loop ---- */

void vmt_session_request_stop(vmt_session *s) { atomic_store(&s->stop, 1); }
int vmt_session_stop_requested(const vmt_session *s) { return atomic_load(&((vmt_session *)s)->stop); }
const vmt_stop_info *vmt_session_last_stop(const vmt_session *s) { return &s->last_stop; }
uint64_t vmt_session_events_handled(const vmt_session *s) { return s->events_handled; }

void vmt_session_get_stats(const vmt_session *s, vmt_session_stats *out)
{
    out->frame_hits = s->frames.hits;
    out->frame_misses = s->frames.misses;
    out->v2p_hits = s->v2p.hits;
    out->v2p_misses = s->v2p.misses;
    out->events = s->events_handled;
}

vmt_status vmt_session_stop_on_signals(vmt_session *s)
{
    if (s->sigfd >= 0)
        return VMT_OK;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int rc = pthread_sigmask(SIG_BLOCK, &set, &old);
    if (rc)
        return vmt_errbuf_set(&s->err, VMT_E_IO, "stop_on_signals: pthread_sigmask: %s", strerror(rc));
    sigemptyset(&s->sig_unblock);
    if (!sigismember(&old, SIGINT))
        sigaddset(&s->sig_unblock, SIGINT);
    if (!sigismember(&old, SIGTERM))
        sigaddset(&s->sig_unblock, SIGTERM);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        pthread_sigmask(SIG_UNBLOCK, &s->sig_unblock, NULL);
        return vmt_errbuf_set(&s->err, VMT_E_IO, "stop_on_signals: signalfd: %s", strerror(e));
    }
    s->sigfd = fd;
    return VMT_OK;
}

/* Poll the signalfd; a pending SIGINT/SIGTERM becomes a stop request. */
static void poll_signals(vmt_session *s)
{
    if (s->sigfd < 0)
        return;
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
        vmt_session_request_stop(s);
}

static int take_stop_request(vmt_session *s)
{
    poll_signals(s);
    return atomic_exchange(&s->stop, 0) != 0;
}

vmt_status vmt_session_run(vmt_session *s, vmt_event_handler handler, void *user)
{
    if (!handler)
        return vmt_errbuf_set(&s->err, VMT_E_INVAL, "run: a handler is required");
    memset(&s->last_stop, 0, sizeof s->last_stop);
    for (;;) {
        if (take_stop_request(s))
            return VMT_OK;
        vmt_event ev;
        memset(&ev, 0, sizeof ev);
        vmt_status st = vmt_drv_wait_event(s->drv, s->cfg.event_timeout_ms, &ev);
        if (st == VMT_E_TIMEOUT)
            continue;
        flush_all(s); /* the guest ran (or may have) */
        if (st)
            return vmt_errbuf_set(&s->err, st, "run: waiting for an event: %s", vmt_driver_error(s->drv));
        if (!s->paging_pinned && (ev.regs.cr0 & VMT_CR0_PG))
            detect_paging(s, &ev.regs);
        s->events_handled++;
        vmt_response resp = vmt_response_continue();
        vmt_status hst = handler(s, &ev, &resp, user);
        if (ev.kind == VMT_EVENT_STOPPED) {
            s->last_stop = ev.u.stop;
            (void)take_stop_request(s); /* run is returning anyway: do not carry it over */
            if (hst)
                return vmt_errbuf_set(&s->err, hst, "run: the handler failed (%s) on the stop event",
                                      vmt_strerror(hst));
            return VMT_OK;
        }
        if (hst)
            resp = vmt_response_continue(); /* neutral answer: the guest stays consistent */
        st = vmt_drv_respond(s->drv, &ev, &resp);
        flush_all(s);
        if (hst) {
            char drv_msg[VMT_ERRBUF_LEN / 2] = "";
            if (st)
                snprintf(drv_msg, sizeof drv_msg, "; answering it also failed: %s", vmt_driver_error(s->drv));
            return vmt_errbuf_set(&s->err, hst, "run: the handler failed (%s) on %s event %" PRIu64 "%s",
                                  vmt_strerror(hst), vmt_event_kind_name(ev.kind), ev.seq, drv_msg);
        }
        if (st)
            return vmt_errbuf_set(&s->err, st, "run: responding to %s event %" PRIu64 ": %s",
                                  vmt_event_kind_name(ev.kind), ev.seq, vmt_driver_error(s->drv));
    }
}

/* ---- invariants ---- */

vmt_status vmt_session_check(const vmt_session *s)
{
    vmt_session *m = (vmt_session *)s; /* the message buffer is mutable state of a const handle */
    char why[VMT_ERRBUF_LEN - 32];
    vmt_status st = vmt_arbiter_check(&s->arb, why, sizeof why);
    if (!st)
        st = vmt_frame_cache_check(&s->frames, why, sizeof why);
    if (!st)
        st = vmt_v2p_cache_check(&s->v2p, why, sizeof why);
    if (!st && s->paging.levels != 4 && s->paging.levels != 5) {
        snprintf(why, sizeof why, "paging config has %u levels", s->paging.levels);
        st = VMT_E_INTERNAL;
    }
    if (st)
        return vmt_errbuf_set(&m->err, VMT_E_INTERNAL, "session check: %s", why);
    return VMT_OK;
}
