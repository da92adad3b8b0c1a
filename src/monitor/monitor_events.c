/*
 * monitor/monitor_events.c — the monitor's event handler.
 *
 * Design: one dispatch per event kind, in the order that keeps the pieces
 * independent:
 *   MEM_ACCESS, SINGLESTEP  the page-table monitor is offered the event
 *       first (a write to a table page it protects, or the step it asked
 *       for); its page events go to the breakpoint manager (which parks or
 *       re-arms breakpoints) and then to the user's page callback. Otherwise
 *       the breakpoint manager handles it (a hidden read/write of a hooked
 *       page, or its own step).
 *   BREAKPOINT, HW_BREAKPOINT  the breakpoint manager decides: one of ours
 *       (the hooks behind it are called), the guest's own INT3 (reinjected),
 *       or a stale one (resumed).
 *   IO  a ucall is decoded (vmt_ucall_decode over the session's frame
 *       cache) and recorded; detector results and DONE are kept in the
 *       stats; every decoded call goes to the ucall callback.
 *   CR_WRITE  counted; STOPPED  counted (the session loop ends the run).
 * Failures: a hook callback's failure or the breakpoint manager failing on
 * a breakpoint event is returned (the loop stops, the guest stays
 * consistent between events). A page-table monitor failure is survived (its
 * response lets the guest go on; the watches are re-walked before the next
 * event), and so is the breakpoint manager failing to follow a page event
 * (the hook is registered again under that root before the next event).
 * Survived failures are counted and the first one kept for the summary. A
 * malformed ucall is only counted: the guest's problem.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "monitor/monitor_internal.h"

/* ---- failures the monitor survives ---- */

void mon_survived(vmt_monitor *m, const char *what, const char *msg)
{
    m->stats.errors++;
    vmt_errbuf_set(&m->err, VMT_E_DRIVER, "%s: %s", what, msg);
    if (!m->first_error[0])
        snprintf(m->first_error, sizeof m->first_error, "%s: %s", what, msg);
}

/* ---- page events ---- */

static void ptm_sink(void *ctx, const vmt_ptm_event *ev)
{
    vmt_monitor *m = ctx;
    switch (ev->kind) {
    case VMT_PTM_PAGE_IN: m->stats.page_in++; break;
    case VMT_PTM_PAGE_OUT: m->stats.page_out++; break;
    case VMT_PTM_REMAP: m->stats.remap++; break;
    }
    if (vmt_bpm_handle_ptm_event(m->bpm, ev, NULL) != VMT_OK) {
        char what[96];
        snprintf(what, sizeof what, "breakpoint manager on %s of va 0x%llx", vmt_ptm_event_kind_name(ev->kind),
                 (unsigned long long)ev->ctx.va);
        mon_survived(m, what, vmt_bpm_error(m->bpm));
        if (ev->tag < m->nhooks && m->nrereg < MON_MAX_ROOTS) {
            m->rereg[m->nrereg].hook = (size_t)ev->tag;
            m->rereg[m->nrereg].root = ev->ctx.root;
            m->rereg[m->nrereg].present = ev->kind != VMT_PTM_PAGE_OUT;
            m->rereg[m->nrereg].pa = ev->new_pa;
            m->nrereg++;
        }
    }
    if (m->page_fn) {
        const char *symbol = ev->tag < m->nhooks ? m->hooks[ev->tag].symbol : NULL;
        m->page_fn(ev, symbol, m->page_user);
    }
}

/* The ptm fills a response that lets the guest go on even when it fails
 * (the affected watches keep their old state): the failure is recorded and
 * the watches are re-walked before the next event. */
static void offer_to_ptm(vmt_monitor *m, const vmt_event *ev, vmt_response *resp, bool *handled)
{
    vmt_status st = vmt_ptm_handle_event(m->ptm, ev, resp, ptm_sink, m, handled);
    if (!*handled)
        return;
    if (ev->kind == VMT_EVENT_MEM_ACCESS)
        m->stats.pt_writes++;
    if (st != VMT_OK) {
        mon_survived(m, "page-table monitor", vmt_ptm_error(m->ptm));
        m->resync_pending = true;
    }
}

/* Breakpoints the manager failed to move: remove them and insert them again
 * where the page event said the page is now (or pending after a page-out).
 * Roots dropped meanwhile are skipped. */
static void reregister(vmt_monitor *m)
{
    size_t n = m->nrereg;
    m->nrereg = 0;
    for (size_t i = 0; i < n; i++) {
        size_t h = m->rereg[i].hook;
        vmt_pa root = m->rereg[i].root;
        bool followed = false;
        for (size_t r = 0; r < m->nroots; r++)
            followed |= m->roots[r] == root;
        if (!followed)
            continue;
        vmt_bpm_bp bp;
        memset(&bp, 0, sizeof bp);
        bp.ctx = vmt_addr_ctx_make(m->hooks[h].va, root);
        bp.view = m->view;
        bp.key = MON_KEY_ENTRY;
        bp.tag = h;
        (void)vmt_bpm_remove(m->bpm, &bp);
        vmt_status st = m->rereg[i].present ? vmt_bpm_insert_pa(m->bpm, &bp, m->rereg[i].pa, NULL)
                                            : vmt_bpm_insert(m->bpm, &bp, NULL);
        if (st != VMT_OK && st != VMT_E_EXISTS) {
            m->stats.errors++;
            vmt_errbuf_set(&m->err, st, "re-inserting the breakpoint of %s: %s", m->hooks[h].symbol,
                           vmt_bpm_error(m->bpm));
        }
    }
}

static void resync(vmt_monitor *m)
{
    m->resync_pending = false;
    m->stats.resyncs++;
    if (vmt_ptm_resync(m->ptm, ptm_sink, m) != VMT_OK) {
        m->stats.errors++;
        vmt_errbuf_set(&m->err, VMT_E_DRIVER, "page-table re-walk: %s", vmt_ptm_error(m->ptm));
    }
}

/* ---- hooks ---- */

vmt_hit mon_make_hit(vmt_monitor *m, const vmt_event *ev, size_t hook, int is_return, uint64_t count)
{
    vmt_hit h;
    memset(&h, 0, sizeof h);
    h.monitor = m;
    h.symbol = m->hooks[hook].symbol;
    h.symbol_va = m->hooks[hook].va;
    h.hook_index = (unsigned)hook;
    h.is_return = is_return;
    h.count = count;
    h.vcpu = ev->vcpu;
    h.view = ev->view;
    h.root = ev->regs.cr3 & VMT_CR3_ADDR_MASK;
    h.regs = ev->regs;
    h.alias = m->hit_alias;
    return h;
}

vmt_status mon_call_entry(vmt_monitor *m, const vmt_event *ev, size_t hook)
{
    mon_hook *k = &m->hooks[hook];
    k->hits++;
    m->stats.hits++;
    vmt_hit h = mon_make_hit(m, ev, hook, 0, k->hits);
    if (k->ret_fn) {
        vmt_status st = mon_arm_return(m, ev, hook, k->hits);
        if (st != VMT_OK)
            return st;
    }
    if (k->fn) {
        vmt_status st = k->fn(&h, k->user);
        if (st != VMT_OK)
            return vmt_errbuf_set(&m->err, st, "hook callback of %s failed: %s", k->symbol, vmt_strerror(st));
    }
    return VMT_OK;
}

/* ---- ucalls ---- */

static void record_detector(vmt_monitor *m, const vmt_ucall *uc)
{
    vmt_monitor_stats *st = &m->stats;
    size_t i;
    for (i = 0; i < st->ndetectors; i++)
        if (st->detectors[i].id == uc->args[0])
            break; /* a detector that runs again replaces its result */
    if (i == st->ndetectors) {
        if (st->ndetectors == VMT_MONITOR_MAX_DETECTORS)
            return;
        st->ndetectors++;
    }
    vmt_detector_result *d = &st->detectors[i];
    d->id = (uint32_t)uc->args[0];
    d->pass = uc->args[1] == 1;
    snprintf(d->name, sizeof d->name, "%s", uc->name);
    snprintf(d->detail, sizeof d->detail, "%s", uc->text);
}

static vmt_status handle_io(vmt_monitor *m, const vmt_event *ev, vmt_response *resp)
{
    if (!ev->u.io.is_write) {
        /* No device behind any port: reads see an open bus. */
        resp->actions |= VMT_RESP_IO_VALUE;
        resp->io_value = 0xffffffffu;
        return VMT_OK;
    }
    if (!vmt_ucall_is_ucall(ev))
        return VMT_OK;
    vmt_ucall uc;
    char why[160];
    vmt_phys_reader rd = vmt_session_reader(m->session);
    uint64_t ram = vmt_driver_caps(m->driver)->ram_frames * VMT_PAGE_SIZE;
    if (vmt_ucall_decode(&rd, ram, ev, &uc, why, sizeof why) != VMT_OK) {
        m->stats.ucall_errors++;
        vmt_errbuf_set(&m->err, VMT_E_FORMAT, "malformed ucall: %s", why);
        return VMT_OK; /* the guest's problem, not a reason to stop monitoring */
    }
    if (uc.cmd == VMT_UCALL_DETECTOR && uc.args[0] > UINT32_MAX) {
        /* ids are 32-bit: a wider one would alias a real detector's result */
        m->stats.ucall_errors++;
        vmt_errbuf_set(&m->err, VMT_E_FORMAT, "malformed ucall: detector id 0x%" PRIx64 " does not fit 32 bits",
                       uc.args[0]);
        return VMT_OK;
    }
    m->stats.ucalls++;
    if (uc.cmd == VMT_UCALL_DETECTOR)
        record_detector(m, &uc);
    if (uc.cmd == VMT_UCALL_DONE) {
        m->stats.guest_done = 1;
        m->stats.guest_exit_code = uc.args[0];
    }
    if (m->ucall_fn)
        m->ucall_fn(&uc, m->ucall_user);
    return VMT_OK;
}

/* ---- dispatch ---- */

static vmt_status dispatch(vmt_monitor *m, const vmt_event *ev, vmt_response *resp);

vmt_status vmt_monitor_handle_event(vmt_session *s, const vmt_event *ev, vmt_response *resp, void *user)
{
    vmt_monitor *m = user;
    (void)s;
    vmt_status st = dispatch(m, ev, resp);
    if (m->trace_fn)
        m->trace_fn(ev, resp, st, m->trace_user);
    return st;
}

static vmt_status dispatch(vmt_monitor *m, const vmt_event *ev, vmt_response *resp)
{
    *resp = vmt_response_continue();
    if (ev->kind > VMT_EVENT_NONE && ev->kind < VMT_EVENT_KIND_COUNT)
        m->stats.events[ev->kind]++;
    /* A root not seen before: the hooks get registered under it first, so
     * this very event (e.g. the first hit there) already finds them. */
    if (ev->kind != VMT_EVENT_STOPPED && (ev->regs.cr0 & VMT_CR0_PG)) {
        vmt_status st = mon_follow_root(m, ev->vcpu, ev->regs.cr3);
        if (st != VMT_OK)
            return st;
    }
    if (m->resync_pending && m->watch_tables && !vmt_ptm_stepping(m->ptm, ev->vcpu))
        resync(m);
    if (m->nrereg)
        reregister(m);
    if (ev->kind != VMT_EVENT_BREAKPOINT)
        m->stale_repeats = 0; /* progress: the livelock counter starts over */
    switch (ev->kind) {
    case VMT_EVENT_MEM_ACCESS:
    case VMT_EVENT_SINGLESTEP: {
        bool handled = false;
        offer_to_ptm(m, ev, resp, &handled);
        if (handled)
            return VMT_OK;
        return mon_bpm_event(m, ev, resp);
    }
    case VMT_EVENT_BREAKPOINT:
    case VMT_EVENT_HW_BREAKPOINT:
        return mon_bpm_event(m, ev, resp);
    case VMT_EVENT_IO:
        return handle_io(m, ev, resp);
    case VMT_EVENT_CR_WRITE:
        if (ev->u.cr.cr != 3)
            return VMT_OK;
        m->stats.cr3_writes++;
        return mon_follow_root(m, ev->vcpu, ev->u.cr.new_value);
    case VMT_EVENT_STOPPED:
    case VMT_EVENT_NONE:
    case VMT_EVENT_KIND_COUNT:
        break;
    }
    return VMT_OK;
}
