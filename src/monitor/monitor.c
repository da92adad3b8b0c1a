/*
 * monitor/monitor.c — the monitor's life cycle, hooks, counters and checker.
 *
 * Design: vmt_monitor_create() makes the breakpoint manager and the
 * page-table monitor on the session (breakpoint view chosen by
 * monitor_bpm.c from the driver's capabilities). vmt_monitor_hook()
 * resolves the symbol in the image (unknown -> VMT_E_NOTFOUND naming it),
 * reads the translation root from vCPU 0's CR3, inserts the breakpoint and
 * watches the VA's translation with tag = hook index, so page events come
 * back with the hook they belong to. If the watch fails the breakpoint is
 * removed again: a hook is all or nothing.
 *
 * Invariants (vmt_monitor_check): hook symbols are unique and resolve to
 * their va; every hook is watched by the ptm; the per-hook counters add up
 * to the totals; pending returns name existing return hooks; then the
 * breakpoint manager, the page-table monitor and the session checkers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/monitor_internal.h"

vmt_status vmt_monitor_create(vmt_session *s, const vmt_image *img, vmt_monitor **out, char *why, size_t why_len)
{
    return vmt_monitor_create_ex(s, img, NULL, out, why, why_len);
}

vmt_status vmt_monitor_create_ex(vmt_session *s, const vmt_image *img, const vmt_monitor_config *cfg,
                                 vmt_monitor **out, char *why, size_t why_len)
{
    if (out)
        *out = NULL;
    if (!s || !img || !out) {
        vmt_why(why, why_len, "monitor: session, image and out are required");
        return VMT_E_INVAL;
    }
    vmt_monitor *m = calloc(1, sizeof *m);
    if (!m) {
        vmt_why(why, why_len, "monitor: out of memory");
        return VMT_E_NOMEM;
    }
    m->session = s;
    m->driver = vmt_session_driver(s);
    m->image = img;
    m->view = VMT_VIEW_DEFAULT;
    vmt_status st = vmt_ptm_create(s, &m->ptm);
    if (st != VMT_OK) {
        vmt_why(why, why_len, "monitor: page-table monitor: %s", vmt_strerror(st));
        free(m);
        return st;
    }
    if (cfg)
        m->cfg = *cfg;
    if (!m->cfg.livelock_repeats)
        m->cfg.livelock_repeats = MON_STALE_LIVELOCK;
    st = mon_bpm_setup(m, why, why_len);
    if (st != VMT_OK) {
        vmt_ptm_destroy(m->ptm);
        free(m);
        return st;
    }
    *out = m;
    return VMT_OK;
}

void vmt_monitor_destroy(vmt_monitor *m)
{
    if (!m)
        return;
    /* Watches first (their restrictions go), then breakpoints and the view. */
    vmt_ptm_destroy(m->ptm);
    mon_bpm_teardown(m);
    for (size_t i = 0; i < m->nhooks; i++)
        free(m->hooks[i].symbol);
    free(m->hooks);
    free(m);
}

const char *vmt_monitor_error(const vmt_monitor *m)
{
    return m ? m->err.msg : "no monitor";
}

vmt_session *vmt_monitor_session(vmt_monitor *m)
{
    return m->session;
}

vmt_bpm *vmt_monitor_bpm(vmt_monitor *m)
{
    return m->bpm;
}

vmt_ptm *vmt_monitor_ptm(vmt_monitor *m)
{
    return m->ptm;
}

vmt_view vmt_monitor_view(const vmt_monitor *m)
{
    return m->view;
}

static int find_hook(const vmt_monitor *m, const char *symbol)
{
    for (size_t i = 0; i < m->nhooks; i++)
        if (strcmp(m->hooks[i].symbol, symbol) == 0)
            return (int)i;
    return -1;
}

/* A resource limit is a usage error, refused before anything changes: with
 * debug registers every distinct hooked address needs one of them. */
static vmt_status check_breakpoint_room(vmt_monitor *m, const char *symbol, vmt_va va)
{
    unsigned limit = vmt_monitor_breakpoint_limit(m);
    if (limit == 0)
        return VMT_OK;
    size_t distinct = 0;
    bool shared = false;
    char holders[MON_WHY_LEN] = "";
    size_t hl = 0;
    for (size_t i = 0; i < m->nhooks; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            first &= m->hooks[j].va != m->hooks[i].va;
        shared |= m->hooks[i].va == va;
        if (!first)
            continue;
        distinct++;
        if (hl < sizeof holders)
            hl += (size_t)snprintf(holders + hl, sizeof holders - hl, "%s%s", distinct > 1 ? ", " : "",
                                   m->hooks[i].symbol);
    }
    if (shared || distinct < limit)
        return VMT_OK;
    return vmt_errbuf_set(&m->err, VMT_E_RANGE,
                          "hook '%s' does not fit: the %u debug registers are taken by %s (use fewer hooks, or "
                          "--breakpoints shadow/exec)",
                          symbol, limit, holders);
}

vmt_status vmt_monitor_hook(vmt_monitor *m, const char *symbol, vmt_hook_fn fn, void *user)
{
    if (!m || !symbol || !symbol[0])
        return m ? vmt_errbuf_set(&m->err, VMT_E_INVAL, "hook: empty symbol name") : VMT_E_INVAL;
    if (find_hook(m, symbol) >= 0)
        return vmt_errbuf_set(&m->err, VMT_E_EXISTS, "hook: '%s' is already hooked", symbol);
    vmt_va va;
    char why[MON_WHY_LEN];
    vmt_status cs = vmt_image_code_symbol(m->image, symbol, &va, why, sizeof why);
    if (cs != VMT_OK)
        return vmt_errbuf_set(&m->err, cs, "hook: %s", why);
    vmt_status lim = check_breakpoint_room(m, symbol, va);
    if (lim != VMT_OK)
        return lim;
    if (m->nhooks == m->cap_hooks) {
        size_t cap = m->cap_hooks ? 2 * m->cap_hooks : 8;
        mon_hook *h = realloc(m->hooks, cap * sizeof *h);
        if (!h)
            return vmt_errbuf_set(&m->err, VMT_E_NOMEM, "hook %s: out of memory", symbol);
        m->hooks = h;
        m->cap_hooks = cap;
    }
    mon_hook *k = &m->hooks[m->nhooks];
    memset(k, 0, sizeof *k);
    k->symbol = strdup(symbol);
    if (!k->symbol)
        return vmt_errbuf_set(&m->err, VMT_E_NOMEM, "hook %s: out of memory", symbol);
    k->va = va;
    k->fn = fn;
    k->user = user;
    size_t index = m->nhooks;
    /* One root at a time: a hostile path under one root refuses this hook
     * there only (kept, counted, retried when a vCPU enters the root). */
    for (size_t r = 0; r < m->nroots; r++)
        mon_register_slot(m, index, r);
    m->nhooks++;
    mon_sync_root_stats(m);
    return VMT_OK;
}

vmt_status vmt_monitor_hook_return(vmt_monitor *m, const char *symbol, vmt_hook_fn fn, void *user)
{
    int i = m && symbol ? find_hook(m, symbol) : -1;
    if (i < 0)
        return m ? vmt_errbuf_set(&m->err, VMT_E_NOTFOUND, "return hook: '%s' is not hooked", symbol ? symbol : "")
                 : VMT_E_INVAL;
    if (!fn)
        return vmt_errbuf_set(&m->err, VMT_E_INVAL, "return hook %s: a callback is required", symbol);
    m->hooks[i].ret_fn = fn;
    m->hooks[i].ret_user = user;
    return VMT_OK;
}

void vmt_monitor_on_page_event(vmt_monitor *m, vmt_page_event_fn fn, void *user)
{
    m->page_fn = fn;
    m->page_user = user;
}

void vmt_monitor_on_ucall(vmt_monitor *m, vmt_ucall_fn fn, void *user)
{
    m->ucall_fn = fn;
    m->ucall_user = user;
}

void vmt_monitor_on_event(vmt_monitor *m, vmt_event_trace_fn fn, void *user)
{
    m->trace_fn = fn;
    m->trace_user = user;
}

size_t vmt_monitor_hook_count(const vmt_monitor *m)
{
    return m->nhooks;
}

const char *vmt_monitor_hook_symbol(const vmt_monitor *m, size_t i)
{
    return i < m->nhooks ? m->hooks[i].symbol : NULL;
}

uint64_t vmt_monitor_hook_hits(const vmt_monitor *m, size_t i)
{
    return i < m->nhooks ? m->hooks[i].hits : 0;
}

uint64_t vmt_monitor_hook_returns(const vmt_monitor *m, size_t i)
{
    return i < m->nhooks ? m->hooks[i].returns : 0;
}

int vmt_monitor_hook_has_return(const vmt_monitor *m, size_t i)
{
    return i < m->nhooks && m->hooks[i].ret_fn != NULL;
}

const char *vmt_hook_state_name(vmt_hook_state state)
{
    switch (state) {
    case VMT_HOOK_ARMED:
        return "armed";
    case VMT_HOOK_PENDING:
        return "pending";
    case VMT_HOOK_REFUSED:
        return "refused";
    }
    return "?";
}

vmt_status vmt_monitor_hook_status(const vmt_monitor *m, size_t i, vmt_hook_status *out)
{
    if (!m || !out || i >= m->nhooks)
        return VMT_E_INVAL;
    memset(out, 0, sizeof *out);
    const mon_hook *k = &m->hooks[i];
    for (size_t r = 0; r < m->nroots; r++) {
        if (k->reg[r] == MON_REG_REFUSED) {
            out->roots_refused++;
            continue;
        }
        vmt_ptm_watch_info wi;
        bool present = !m->watch_tables ||
                       (vmt_ptm_query(m->ptm, vmt_addr_ctx_make(k->va, m->roots[r]), m->view, i, &wi) == VMT_OK &&
                        wi.present);
        if (present)
            out->roots_armed++;
        else
            out->roots_pending++;
    }
    out->state = out->roots_armed ? VMT_HOOK_ARMED : out->roots_pending ? VMT_HOOK_PENDING : VMT_HOOK_REFUSED;
    out->refusals = k->refusals;
    out->refused_root = k->refused_root;
    snprintf(out->refused_why, sizeof out->refused_why, "%s",
             k->refusals ? k->refused_why : out->roots_refused || out->roots_pending || out->roots_armed
                                              ? ""
                                              : "no address space is followed");
    return VMT_OK;
}

unsigned vmt_monitor_breakpoint_limit(const vmt_monitor *m)
{
    if (vmt_bpm_controller_of(m->bpm) != VMT_BPM_CTL_DEBUG)
        return 0;
    return vmt_driver_caps(m->driver)->hw_breakpoints;
}

vmt_bpm_controller vmt_monitor_controller(const vmt_monitor *m)
{
    return vmt_bpm_controller_of(m->bpm);
}

const char *vmt_monitor_describe(const vmt_monitor *m)
{
    return m->description;
}

vmt_status vmt_monitor_run(vmt_monitor *m)
{
    return vmt_session_run(m->session, vmt_monitor_handle_event, m);
}

void vmt_monitor_request_stop(vmt_monitor *m)
{
    vmt_session_request_stop(m->session);
}

const char *vmt_monitor_first_error(const vmt_monitor *m)
{
    return m->first_error;
}

const vmt_monitor_stats *vmt_monitor_stats_get(const vmt_monitor *m)
{
    return &m->stats;
}

static vmt_status check_fail(const vmt_monitor *m, const char *what)
{
    /* The checker is const for callers; the message buffer is the only
     * thing it writes. */
    vmt_errbuf *e = (vmt_errbuf *)&m->err;
    return vmt_errbuf_set(e, VMT_E_INTERNAL, "monitor invariant: %s", what);
}

vmt_status vmt_monitor_check(const vmt_monitor *m)
{
    if (!m)
        return VMT_E_INVAL;
    uint64_t hits = 0, returns = 0;
    for (size_t i = 0; i < m->nhooks; i++) {
        const mon_hook *k = &m->hooks[i];
        if (!k->symbol || find_hook(m, k->symbol) != (int)i)
            return check_fail(m, "hook symbols are not unique");
        vmt_va va;
        if (vmt_image_symbol(m->image, k->symbol, &va, NULL) != VMT_OK || va != k->va)
            return check_fail(m, "a hook's va is not its symbol's");
        if (!k->ret_fn && k->returns)
            return check_fail(m, "returns counted for a hook without a return callback");
        hits += k->hits;
        returns += k->returns;
    }
    if (hits != m->stats.hits || returns != m->stats.returns)
        return check_fail(m, "per-hook counters do not add up to the totals");
    if (m->npending > MON_MAX_PENDING_RETURNS)
        return check_fail(m, "pending returns overflow");
    for (size_t i = 0; i < m->npending; i++)
        if (m->pending[i].hook >= m->nhooks || !m->hooks[m->pending[i].hook].ret_fn)
            return check_fail(m, "a pending return names no return hook");
    if (m->stats.ndetectors > VMT_MONITOR_MAX_DETECTORS)
        return check_fail(m, "detector table overflow");
    vmt_status st = mon_bpm_check(m);
    if (st != VMT_OK)
        return st;
    if (vmt_ptm_check(m->ptm) != VMT_OK)
        return vmt_errbuf_set((vmt_errbuf *)&m->err, VMT_E_INTERNAL, "page-table monitor: %s", vmt_ptm_error(m->ptm));
    if (vmt_session_check(m->session) != VMT_OK)
        return vmt_errbuf_set((vmt_errbuf *)&m->err, VMT_E_INTERNAL, "session: %s", vmt_session_error(m->session));
    return VMT_OK;
}
