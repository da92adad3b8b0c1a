/*
 * monitor/monitor_bpm.c — the breakpoint side of the monitor: the
 * breakpoint manager, the breakpoint view, translation roots, hits and
 * one-shot return breakpoints.
 *
 * Design:
 *  - The breakpoint manager picks its controller from the driver's
 *    capabilities (shadow INT3, execute permission, debug registers). The
 *    first two need a breakpoint view other than view 0: the monitor creates
 *    one with all rights and moves every vCPU to it; view 0 stays the
 *    unaltered memory the manager steps through.
 *  - Registration of hook i under root r = breakpoint (va, r, key ENTRY,
 *    tag i) + page-table watch (va, r, tag i). Both or neither.
 *  - Roots are followed: a root seen for the first time (CR3 write, or the
 *    CR3 of any event) gets every hook registered under it, ONE BY ONE: a
 *    hook whose path is hostile or unreadable under that root is refused
 *    there only (reason kept on the hook, counted, retried whenever a vCPU
 *    enters that root again), every other hook is armed. A root is dropped
 *    when no vCPU runs on it, unless that loses something: it still holds
 *    a hook refused under every root in use (kept, "retained"), or the
 *    vCPU's new root could not be followed (root table full).
 *  - A hit event can carry several breakpoints (entry and return sites at
 *    one address); each entry hook is called once per event. Return
 *    breakpoints: at an entry of a return-hooked function the return
 *    address is read from [rsp] and a one-shot breakpoint (key RETURN) is
 *    put there; the return is recognised by (return context, rsp == entry
 *    rsp + 8), so recursion and several outstanding calls sharing a return
 *    address are told apart. The breakpoint goes when its last outstanding
 *    call returned.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "monitor/monitor_internal.h"



static vmt_bpm_bp entry_bp(const vmt_monitor *m, size_t index, vmt_pa root)
{
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.ctx = vmt_addr_ctx_make(m->hooks[index].va, root);
    bp.view = m->view;
    bp.key = MON_KEY_ENTRY;
    bp.tag = index;
    return bp;
}

vmt_status mon_bpm_setup(vmt_monitor *m, char *why, size_t why_len)
{
    vmt_bpm_config bc = { m->cfg.controller, m->cfg.bpm_flags };
    vmt_status st = vmt_bpm_create(m->session, &bc, &m->bpm, why, why_len);
    if (st != VMT_OK)
        return st;
    /* A view of our own whenever the driver has views: the shadow and
     * execute controllers need it for their breakpoints, and the page-table
     * monitor needs it for any controller (view 0 cannot be restricted). */
    vmt_bpm_controller ctl = vmt_bpm_controller_of(m->bpm);
    const vmt_caps *caps = vmt_driver_caps(m->driver);
    m->watch_tables = vmt_driver_has(m->driver, VMT_CAP_VIEWS | VMT_CAP_VIEW_PERM) &&
                      (caps->trap_access & VMT_ACCESS_W);
    if (ctl == VMT_BPM_CTL_SHADOW || ctl == VMT_BPM_CTL_EXEC || vmt_driver_has(m->driver, VMT_CAP_VIEWS)) {
        st = vmt_drv_view_create(m->driver, VMT_ACCESS_RWX, &m->view);
        if (st == VMT_OK) {
            m->own_view = true;
            st = vmt_drv_view_switch(m->driver, VMT_VCPU_ALL, m->view);
        }
        if (st != VMT_OK) {
            vmt_why(why, why_len, "monitor: breakpoint view: %s", vmt_driver_error(m->driver));
            mon_bpm_teardown(m);
            return st;
        }
    }
    if (!m->own_view)
        m->watch_tables = false;
    if (vmt_driver_has(m->driver, VMT_CAP_CR3_EVENTS))
        (void)vmt_drv_monitor(m->driver, VMT_EVENT_CR_WRITE, 1); /* else roots are seen on events */
    vmt_regs regs;
    st = vmt_drv_get_regs(m->driver, 0, &regs);
    if (st != VMT_OK) {
        vmt_why(why, why_len, "monitor: registers of vCPU 0: %s", vmt_driver_error(m->driver));
        mon_bpm_teardown(m);
        return st;
    }
    m->roots[0] = regs.cr3 & VMT_CR3_ADDR_MASK;
    m->retained[0] = false;
    m->nroots = 1;
    m->stats.roots = 1;
    for (size_t v = 0; v < MON_MAX_VCPUS; v++)
        m->vcpu_root[v] = VMT_PA_NONE;
    m->vcpu_root[0] = m->roots[0];
    mon_sync_root_stats(m);
    mon_describe(m);
    return VMT_OK;
}

void mon_bpm_teardown(vmt_monitor *m)
{
    vmt_bpm_destroy(m->bpm);
    m->bpm = NULL;
    if (m->own_view) {
        (void)vmt_drv_view_switch(m->driver, VMT_VCPU_ALL, VMT_VIEW_DEFAULT);
        vmt_session_forget_view(m->session, m->view);
        (void)vmt_drv_view_destroy(m->driver, m->view);
        m->own_view = false;
    }
}

void mon_describe(vmt_monitor *m)
{
    const vmt_caps *caps = vmt_driver_caps(m->driver);
    const char *roots = !m->watch_tables ? "page tables NOT watched (the driver cannot trap writes in a view): "
                                           "hooks do not follow pages that move"
                        : vmt_driver_has(m->driver, VMT_CAP_CR3_EVENTS)
                            ? "page tables watched; address-space switches followed through CR3 writes"
                            : "page tables watched; address-space switches followed when an event shows a new CR3";
    switch (vmt_bpm_controller_of(m->bpm)) {
    case VMT_BPM_CTL_SHADOW:
        snprintf(m->description, sizeof m->description,
                 "hidden INT3 in shadow frames (view %u); reads and writes of hooked pages see the original bytes; %s",
                 m->view, roots);
        break;
    case VMT_BPM_CTL_EXEC:
        snprintf(m->description, sizeof m->description,
                 "execute-permission traps in view %u (code unchanged, every instruction of a hooked page traps); %s",
                 m->view, roots);
        break;
    case VMT_BPM_CTL_DEBUG:
        snprintf(m->description, sizeof m->description,
                 "debug registers (code unchanged, invisible to reads; at most %u distinct addresses; they match "
                 "virtual addresses, so a hooked function executed through another mapping of its frame is NOT seen); %s",
                 caps->hw_breakpoints, roots);
        break;
    default:
        snprintf(m->description, sizeof m->description, "breakpoint controller %s; %s",
                 vmt_bpm_controller_name(vmt_bpm_controller_of(m->bpm)), roots);
        break;
    }
}

vmt_status mon_register(vmt_monitor *m, size_t index, vmt_pa root)
{
    vmt_bpm_bp bp = entry_bp(m, index, root);
    vmt_status st = vmt_bpm_insert(m->bpm, &bp, NULL);
    bool inserted = st == VMT_OK;
    if (st != VMT_OK && st != VMT_E_EXISTS)
        return vmt_errbuf_set(&m->err, st, "breakpoint on %s (va 0x%" PRIx64 ", root 0x%" PRIx64 "): %s",
                              m->hooks[index].symbol, bp.ctx.va, root, vmt_bpm_error(m->bpm));
    st = m->watch_tables ? vmt_ptm_monitor(m->ptm, bp.ctx, m->view, index) : VMT_OK;
    if (st != VMT_OK && st != VMT_E_EXISTS) {
        vmt_errbuf_set(&m->err, st, "watching the translation of %s (va 0x%" PRIx64 ", root 0x%" PRIx64 "): %s",
                       m->hooks[index].symbol, bp.ctx.va, root, vmt_ptm_error(m->ptm));
        if (inserted)
            (void)vmt_bpm_remove(m->bpm, &bp);
        return st;
    }
    return VMT_OK;
}

void mon_unregister(vmt_monitor *m, size_t index, vmt_pa root)
{
    vmt_bpm_bp bp = entry_bp(m, index, root);
    if (m->watch_tables)
        (void)vmt_ptm_unmonitor(m->ptm, bp.ctx, m->view, index);
    (void)vmt_bpm_remove(m->bpm, &bp);
}

bool mon_registered(const vmt_monitor *m, size_t index, vmt_pa root)
{
    vmt_bpm_bp bp = entry_bp(m, index, root);
    vmt_ptm_watch_info wi;
    return vmt_bpm_contains(m->bpm, &bp) &&
           (!m->watch_tables || vmt_ptm_query(m->ptm, bp.ctx, m->view, index, &wi) == VMT_OK);
}

void mon_sync_root_stats(vmt_monitor *m)
{
    uint64_t failed = 0;
    for (size_t r = 0; r < m->nroots; r++) {
        bool any_refused = false;
        for (size_t h = 0; h < m->nhooks; h++)
            any_refused |= m->hooks[h].reg[r] == MON_REG_REFUSED;
        failed += any_refused;
    }
    m->stats.roots_failed = failed;
    m->stats.roots_ignored = m->roots_ignored;
    m->stats.hook_refusals = m->hook_refusals;
}

static int root_index(const vmt_monitor *m, vmt_pa root)
{
    for (size_t i = 0; i < m->nroots; i++)
        if (m->roots[i] == root)
            return (int)i;
    return -1;
}

void mon_register_slot(vmt_monitor *m, size_t index, size_t r)
{
    mon_hook *k = &m->hooks[index];
    vmt_status st = mon_register(m, index, m->roots[r]);
    if (st == VMT_OK) {
        k->reg[r] = MON_REG_DONE;
        return;
    }
    /* Hostile or unreadable tables under this root (or no resource left):
     * this hook only, this root only. */
    k->reg[r] = MON_REG_REFUSED;
    k->refusals++;
    k->refused_root = m->roots[r];
    snprintf(k->refused_why, sizeof k->refused_why, "%s", m->err.msg);
    m->hook_refusals++;
}

/* Retry the refused registrations under root slot r (a vCPU entered it). */
static void retry_refused(vmt_monitor *m, size_t r)
{
    for (size_t h = 0; h < m->nhooks; h++)
        if (m->hooks[h].reg[r] == MON_REG_REFUSED && mon_register(m, h, m->roots[r]) == VMT_OK)
            m->hooks[h].reg[r] = MON_REG_DONE;
}

/* Follow a new root: every hook registered under it, one by one. */
static bool add_root(vmt_monitor *m, vmt_pa root)
{
    if (m->nroots == MON_MAX_ROOTS) {
        m->roots_ignored++;
        return false;
    }
    size_t r = m->nroots++;
    m->roots[r] = root;
    m->retained[r] = false;
    m->stats.roots++;
    for (size_t h = 0; h < m->nhooks; h++) {
        m->hooks[h].reg[r] = MON_REG_NONE;
        mon_register_slot(m, h, r);
    }
    return true;
}

/* Unregister every hook (and outstanding return) under a root no vCPU runs on. */
static void drop_root(vmt_monitor *m, vmt_pa root)
{
    int i = root_index(m, root);
    if (i < 0)
        return;
    for (size_t h = 0; h < m->nhooks; h++)
        if (m->hooks[h].reg[i] == MON_REG_DONE)
            mon_unregister(m, h, root);
    for (size_t p = 0; p < m->npending;) {
        if (m->pending[p].ret.root == root) {
            mon_pending_return gone = m->pending[p];
            m->pending[p] = m->pending[--m->npending];
            mon_drop_return_bp(m, &gone);
            m->stats.returns_missed++;
        } else {
            p++;
        }
    }
    size_t last = --m->nroots;
    m->roots[i] = m->roots[last];
    m->retained[i] = m->retained[last];
    for (size_t h = 0; h < m->nhooks; h++) {
        m->hooks[h].reg[i] = m->hooks[h].reg[last];
        m->hooks[h].reg[last] = MON_REG_NONE;
    }
}

static bool root_in_use(const vmt_monitor *m, vmt_pa root)
{
    for (size_t v = 0; v < MON_MAX_VCPUS; v++)
        if (m->vcpu_root[v] == root)
            return true;
    return false;
}

/* Would dropping root slot r lose a hook? Yes when some hook is registered
 * there and refused under every root a vCPU runs on now (its frames may be
 * shared with them: kernel text under every address space). */
static bool root_holds_lost_hook(const vmt_monitor *m, size_t r)
{
    for (size_t h = 0; h < m->nhooks; h++) {
        if (m->hooks[h].reg[r] != MON_REG_DONE)
            continue;
        bool elsewhere = false;
        for (size_t u = 0; u < m->nroots; u++)
            elsewhere |= u != r && root_in_use(m, m->roots[u]) && m->hooks[h].reg[u] == MON_REG_DONE;
        if (!elsewhere)
            return true;
    }
    return false;
}

/* Drop the roots no vCPU runs on, unless that loses something: a hook that
 * is refused under every root in use stays registered where it was armed,
 * and with `keep_all` (the vCPU's new root could not be followed) every
 * root it left is kept. */
static void drop_unused_roots(vmt_monitor *m, bool keep_all)
{
    for (size_t r = 0; r < m->nroots;) {
        if (root_in_use(m, m->roots[r])) {
            m->retained[r] = false;
            r++;
        } else if (keep_all || root_holds_lost_hook(m, r)) {
            m->retained[r] = true;
            r++;
        } else {
            drop_root(m, m->roots[r]); /* moves the last slot to r */
        }
    }
}

vmt_status mon_follow_root(vmt_monitor *m, vmt_vcpu vcpu, vmt_pa root)
{
    root &= VMT_CR3_ADDR_MASK;
    if (vcpu >= MON_MAX_VCPUS)
        vcpu = 0; /* more vCPUs than tracked: they share slot 0's root */
    vmt_pa old = m->vcpu_root[vcpu];
    if (old == root)
        return VMT_OK;
    int r = root_index(m, root);
    bool followed = r >= 0 ? true : add_root(m, root);
    if (r >= 0)
        retry_refused(m, (size_t)r);
    m->vcpu_root[vcpu] = root;
    drop_unused_roots(m, !followed);
    mon_sync_root_stats(m);
    return VMT_OK;
}

/* ---- return breakpoints ---- */

static vmt_bpm_bp return_bp(const vmt_monitor *m, vmt_addr_ctx ret, size_t hook)
{
    vmt_bpm_bp bp;
    memset(&bp, 0, sizeof bp);
    bp.ctx = ret;
    bp.view = m->view;
    bp.key = MON_KEY_RETURN;
    bp.tag = hook;
    return bp;
}

vmt_status mon_arm_return(vmt_monitor *m, const vmt_event *ev, size_t hook, uint64_t count)
{
    vmt_pa root = ev->regs.cr3 & VMT_CR3_ADDR_MASK;
    uint64_t ret_va = 0;
    if (m->npending == MON_MAX_PENDING_RETURNS ||
        vmt_session_read_va(m->session, vmt_addr_ctx_make(ev->regs.rsp, root), &ret_va, sizeof ret_va, NULL) !=
            VMT_OK) {
        m->stats.returns_missed++;
        return VMT_OK;
    }
    vmt_bpm_bp bp = return_bp(m, vmt_addr_ctx_make(ret_va, root), hook);
    vmt_status st = vmt_bpm_insert(m->bpm, &bp, NULL);
    if (st != VMT_OK && st != VMT_E_EXISTS) {
        /* e.g. no debug register left: the call is still logged, its return is not. */
        m->stats.returns_missed++;
        vmt_errbuf_set(&m->err, st, "return breakpoint of %s at 0x%" PRIx64 ": %s", m->hooks[hook].symbol, ret_va,
                       vmt_bpm_error(m->bpm));
        return VMT_OK;
    }
    mon_pending_return *p = &m->pending[m->npending++];
    p->hook = hook;
    p->ret = bp.ctx;
    p->rsp_after = ev->regs.rsp + 8;
    p->count = count;
    return VMT_OK;
}

void mon_drop_return_bp(vmt_monitor *m, const mon_pending_return *gone)
{
    for (size_t j = 0; j < m->npending; j++)
        if (vmt_addr_ctx_eq(m->pending[j].ret, gone->ret))
            return; /* another outstanding call returns there too */
    vmt_bpm_bp bp = return_bp(m, gone->ret, gone->hook);
    (void)vmt_bpm_remove(m->bpm, &bp);
}

vmt_status mon_call_return(vmt_monitor *m, const vmt_event *ev, size_t hook_hint)
{
    (void)hook_hint; /* the tag is the first arming hook; the pending entry is the truth */
    vmt_addr_ctx here = vmt_addr_ctx_make(ev->regs.rip, ev->regs.cr3);
    size_t i;
    for (i = 0; i < m->npending; i++)
        if (vmt_addr_ctx_eq(m->pending[i].ret, here) && m->pending[i].rsp_after == ev->regs.rsp)
            break;
    if (i == m->npending)
        return VMT_OK; /* the return site executed, but not as the return of a pending call */
    mon_pending_return p = m->pending[i];
    m->pending[i] = m->pending[--m->npending];
    bool shared = false;
    for (size_t j = 0; j < m->npending; j++)
        shared |= vmt_addr_ctx_eq(m->pending[j].ret, p.ret);
    if (!shared) {
        vmt_bpm_bp bp = return_bp(m, p.ret, p.hook);
        vmt_status st = vmt_bpm_remove(m->bpm, &bp);
        if (st != VMT_OK && st != VMT_E_NOTFOUND)
            return vmt_errbuf_set(&m->err, st, "removing the return breakpoint at 0x%" PRIx64 ": %s", p.ret.va,
                                  vmt_bpm_error(m->bpm));
    }
    mon_hook *k = &m->hooks[p.hook];
    k->returns++;
    m->stats.returns++;
    vmt_hit h = mon_make_hit(m, ev, p.hook, 1, p.count);
    vmt_status st = k->ret_fn(&h, k->ret_user);
    if (st != VMT_OK)
        return vmt_errbuf_set(&m->err, st, "return callback of %s failed: %s", k->symbol, vmt_strerror(st));
    return VMT_OK;
}

/* ---- events ---- */

#define MON_MAX_HITS 64

vmt_status mon_bpm_event(vmt_monitor *m, const vmt_event *ev, vmt_response *resp)
{
    vmt_bpm_bp hits[MON_MAX_HITS];
    vmt_bpm_verdict v;
    vmt_status st = vmt_bpm_handle_event(m->bpm, ev, resp, hits, MON_MAX_HITS, &v);
    if (st != VMT_OK)
        return vmt_errbuf_set(&m->err, st, "breakpoint manager on a %s event at rip 0x%" PRIx64 ": %s",
                              vmt_event_kind_name(ev->kind), ev->regs.rip, vmt_bpm_error(m->bpm));
    if (v.disposition != VMT_BPM_STALE)
        m->stale_repeats = 0; /* answered otherwise (a hit, a reinjected trap): progress */
    switch (v.disposition) {
    case VMT_BPM_HIT: {
        if (v.double_trap)
            m->stats.foreign_int3++;
        size_t n = v.nhits < MON_MAX_HITS ? v.nhits : MON_MAX_HITS;
        /* through another virtual address of a hooked frame: the hooks
         * there are called with the actual rip (or, configured so, only
         * counted); return sites are matched by address and stay apart */
        m->hit_alias = v.alias;
        if (v.alias && v.nhits)
            m->stats.alias_hits++;
        if (v.alias && m->cfg.alias_mode == VMT_MONITOR_ALIAS_COUNT)
            n = 0;
        bool returned = false;
        for (size_t i = 0; i < n; i++) {
            bool dup = false;
            for (size_t j = 0; j < i; j++)
                dup |= hits[j].key == hits[i].key && hits[j].tag == hits[i].tag;
            if (dup)
                continue;
            if (hits[i].key == MON_KEY_ENTRY && hits[i].tag < m->nhooks) {
                st = mon_call_entry(m, ev, (size_t)hits[i].tag);
            } else if (hits[i].key == MON_KEY_RETURN && !returned) {
                returned = true;
                st = mon_call_return(m, ev, (size_t)hits[i].tag);
            }
            if (st != VMT_OK) {
                m->hit_alias = false;
                return st;
            }
        }
        /* A one-shot return breakpoint that went with this hit: the
         * manager's answer stands. A return site that stores into a hooked
         * page (the workload restores smc_target's immediate right after
         * svc_exit returns) is stepped in view 0 like any displaced
         * instruction, and the manager rebuilds that shadow before it runs
         * (no special case here). */
        m->hit_alias = false;
        return VMT_OK;
    }
    case VMT_BPM_HIDDEN: m->stats.hidden_accesses++; return VMT_OK;
    case VMT_BPM_FOREIGN: m->stats.foreign_int3++; return VMT_OK;
    case VMT_BPM_STALE:
        /* CONTINUE re-executes whatever is at rip: if the driver kept
         * reporting a breakpoint there, the guest would make no progress.
         * The manager never answers STALE twice in a row at one rip (the
         * second is the guest's own trap, reinjected): this guard is the
         * backstop should that ever fail. */
        if (m->stale_repeats && ev->regs.rip == m->stale_rip) {
            if (++m->stale_repeats >= m->cfg.livelock_repeats)
                return vmt_errbuf_set(&m->err, VMT_E_INTERNAL,
                                      "livelock: a breakpoint event at rip 0x%" PRIx64
                                      " with no breakpoint there came %u times in a row",
                                      ev->regs.rip, m->cfg.livelock_repeats);
        } else {
            m->stale_rip = ev->regs.rip;
            m->stale_repeats = 1;
        }
        return VMT_OK;
    case VMT_BPM_NOT_OURS:
    case VMT_BPM_REFRESHED: break;
    }
    return VMT_OK;
}

vmt_status mon_bpm_check(const vmt_monitor *m)
{
    vmt_errbuf *e = (vmt_errbuf *)&m->err;
    if (vmt_bpm_check(m->bpm) != VMT_OK)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "breakpoint manager: %s", vmt_bpm_error(m->bpm));
    if (m->nroots > MON_MAX_ROOTS)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "monitor invariant: root table size %zu", m->nroots);
    uint64_t refused = 0;
    for (size_t h = 0; h < m->nhooks; h++)
        refused += m->hooks[h].refusals;
    if (refused != m->hook_refusals)
        return vmt_errbuf_set(e, VMT_E_INTERNAL, "monitor invariant: per-hook refusals do not add up");
    for (size_t r = 0; r < m->nroots; r++) {
        bool used = false;
        for (size_t v = 0; v < MON_MAX_VCPUS; v++)
            used |= m->vcpu_root[v] == m->roots[r];
        if (!used && !m->retained[r])
            return vmt_errbuf_set(e, VMT_E_INTERNAL,
                                  "monitor invariant: root 0x%" PRIx64 " is registered but no vCPU runs on it",
                                  m->roots[r]);
    }
    for (size_t r = 0; r < m->nroots; r++) {
        for (size_t h = 0; h < m->nhooks; h++) {
            mon_reg st = (mon_reg)m->hooks[h].reg[r];
            if (st == MON_REG_DONE && !mon_registered(m, h, m->roots[r]))
                return vmt_errbuf_set(e, VMT_E_INTERNAL,
                                      "monitor invariant: hook %s has no breakpoint or watch under root 0x%" PRIx64,
                                      m->hooks[h].symbol, m->roots[r]);
            if (st == MON_REG_REFUSED && m->hooks[h].refusals == 0)
                return vmt_errbuf_set(e, VMT_E_INTERNAL, "monitor invariant: hook %s refused but not counted",
                                      m->hooks[h].symbol);
            if (st != MON_REG_DONE && st != MON_REG_REFUSED)
                return vmt_errbuf_set(e, VMT_E_INTERNAL,
                                      "monitor invariant: hook %s has no registration state under root 0x%" PRIx64,
                                      m->hooks[h].symbol, m->roots[r]);
        }
    }
    for (size_t r = m->nroots; r < MON_MAX_ROOTS; r++)
        for (size_t h = 0; h < m->nhooks; h++)
            if (m->hooks[h].reg[r] != MON_REG_NONE)
                return vmt_errbuf_set(e, VMT_E_INTERNAL, "monitor invariant: hook %s has state for an unused root slot",
                                      m->hooks[h].symbol);
    for (size_t i = 0; i < m->npending; i++) {
        vmt_bpm_bp bp = return_bp(m, m->pending[i].ret, m->pending[i].hook);
        if (!vmt_bpm_contains(m->bpm, &bp))
            return vmt_errbuf_set(e, VMT_E_INTERNAL,
                                  "monitor invariant: pending return at 0x%" PRIx64 " has no breakpoint",
                                  m->pending[i].ret.va);
    }
    return VMT_OK;
}
