/*
 * drivers/mem/mem_check.c — the mem driver's invariant checker.
 *
 * Recomputes what the ops maintain incrementally and compares:
 *  - frames: slots below the hwm are either allocated (frame[k] != NULL) or
 *    on the free stack exactly once; slots at or above the hwm are unused;
 *  - views: view 0 is live, has RWX default and no entries; every entry of
 *    a live view is for an in-RAM gfn, is not the default (normalised),
 *    has rights within RWX and within what the driver can trap, and its
 *    backing is RAM or an allocated extra frame; the reference count of
 *    every extra frame equals the number of entries backed by it;
 *  - vCPUs sit on live views, all on the same one when views are VM-wide;
 *  - the event queue indices and the log are in bounds.
 */
#include <stdlib.h>

#include "core/errbuf.h"
#include "drivers/mem/mem_internal.h"

static vmt_status check_frames(const mem_drv *m, char *why, size_t why_len)
{
    if (m->extra_hwm > m->cfg.extra_frames || m->free_count > m->extra_hwm) {
        vmt_why(why, why_len, "mem: frame counters out of range (hwm %u, free %u, max %u)", m->extra_hwm,
                m->free_count, m->cfg.extra_frames);
        return VMT_E_INTERNAL;
    }
    uint8_t *seen = calloc(m->extra_hwm ? m->extra_hwm : 1, 1);
    if (!seen) {
        vmt_why(why, why_len, "mem: check out of memory");
        return VMT_E_INTERNAL;
    }
    vmt_status st = VMT_OK;
    for (uint32_t i = 0; i < m->free_count && !st; i++) {
        uint32_t k = m->free_stack[i];
        if (k >= m->extra_hwm || seen[k] || m->frame[k] || m->refs[k]) {
            vmt_why(why, why_len, "mem: free stack entry %u (slot %u) is out of range, duplicated, allocated or referenced",
                    i, k);
            st = VMT_E_INTERNAL;
        } else {
            seen[k] = 1;
        }
    }
    for (uint32_t k = 0; k < m->extra_hwm && !st; k++) {
        if (!seen[k] && !m->frame[k]) {
            vmt_why(why, why_len, "mem: extra frame slot %u is neither allocated nor free (leaked)", k);
            st = VMT_E_INTERNAL;
        }
    }
    free(seen);
    return st;
}

static vmt_status check_views(const mem_drv *m, char *why, size_t why_len)
{
    if (!m->views[0].live || m->views[0].default_access != VMT_ACCESS_RWX ||
        vmt_hmap_count(&m->views[0].entries) != 0) {
        vmt_why(why, why_len, "mem: view 0 is not the unaltered view");
        return VMT_E_INTERNAL;
    }
    uint32_t *refs = calloc(m->cfg.extra_frames, sizeof *refs);
    if (!refs) {
        vmt_why(why, why_len, "mem: check out of memory");
        return VMT_E_INTERNAL;
    }
    vmt_status st = VMT_OK;
    vmt_access untrappable = (vmt_access)(VMT_ACCESS_RWX & ~m->caps.trap_access);
    for (uint32_t v = 0; v < m->cfg.max_views && !st; v++) {
        const mem_view *mv = &m->views[v];
        if (!mv->live)
            continue;
        char hw[128];
        if (vmt_hmap_check(&mv->entries, hw, sizeof hw)) {
            vmt_why(why, why_len, "mem: view %u map: %s", v, hw);
            st = VMT_E_INTERNAL;
            break;
        }
        if ((mv->default_access & ~VMT_ACCESS_RWX) || (~mv->default_access & untrappable)) {
            vmt_why(why, why_len, "mem: view %u default rights 0x%x deny untrappable accesses", v, mv->default_access);
            st = VMT_E_INTERNAL;
            break;
        }
        size_t it = 0;
        void *k, *val;
        while (!st && vmt_hmap_next(&mv->entries, &it, &k, &val)) {
            vmt_gfn gfn = *(const vmt_gfn *)k;
            const mem_entry *e = val;
            const char *bad = NULL;
            if (gfn >= m->cfg.ram_frames)
                bad = "gfn outside RAM";
            else if (e->backing == gfn && e->access == mv->default_access)
                bad = "default entry stored (not normalised)";
            else if ((e->access & ~VMT_ACCESS_RWX) || (~e->access & untrappable))
                bad = "rights deny untrappable accesses";
            else if (e->backing >= m->cfg.ram_frames &&
                     (e->backing - m->cfg.ram_frames >= m->extra_hwm || !m->frame[e->backing - m->cfg.ram_frames]))
                bad = "backing is not RAM nor an allocated frame";
            if (bad) {
                vmt_why(why, why_len, "mem: view %u gfn 0x%llx -> 0x%llx rights 0x%x: %s", v,
                        (unsigned long long)gfn, (unsigned long long)e->backing, e->access, bad);
                st = VMT_E_INTERNAL;
            } else if (e->backing >= m->cfg.ram_frames) {
                refs[e->backing - m->cfg.ram_frames]++;
            }
        }
    }
    for (uint32_t k = 0; k < m->cfg.extra_frames && !st; k++) {
        if (refs[k] != m->refs[k]) {
            vmt_why(why, why_len, "mem: extra frame slot %u has %u references, %u recorded", k, refs[k], m->refs[k]);
            st = VMT_E_INTERNAL;
        }
    }
    free(refs);
    return st;
}

static vmt_status check_vcpus(const mem_drv *m, char *why, size_t why_len)
{
    bool per_vcpu = (m->caps.flags & VMT_CAP_VIEW_PER_VCPU) != 0;
    for (uint32_t i = 0; i < m->cfg.vcpus; i++) {
        vmt_view v = m->vcpus[i].view;
        if (!mem_view_live(m, v)) {
            vmt_why(why, why_len, "mem: vCPU %u is on view %u, which does not exist", i, v);
            return VMT_E_INTERNAL;
        }
        if (!per_vcpu && v != m->vcpus[0].view) {
            vmt_why(why, why_len, "mem: views are VM-wide but vCPU %u is on view %u and vCPU 0 on %u", i, v,
                    m->vcpus[0].view);
            return VMT_E_INTERNAL;
        }
        for (unsigned b = 0; b < MEM_HW_BP_MAX; b++) {
            if (m->vcpus[i].hwbp[b].enabled && b >= m->caps.hw_breakpoints) {
                vmt_why(why, why_len, "mem: vCPU %u has hardware breakpoint %u beyond the declared %u", i, b,
                        m->caps.hw_breakpoints);
                return VMT_E_INTERNAL;
            }
        }
    }
    return VMT_OK;
}

vmt_status vmt_mem_check(const vmt_driver *d, char *why, size_t why_len)
{
    const mem_drv *m = mem_of(d);
    if (!m) {
        vmt_why(why, why_len, "mem: not a mem driver");
        return VMT_E_INTERNAL;
    }
    if (m->qhead > m->qcount || m->qcount > m->qcap || m->log_count > m->log_cap ||
        (m->log_start && m->log_start >= m->log_cap) || (m->cfg.log_limit && m->log_cap > m->cfg.log_limit)) {
        vmt_why(why, why_len, "mem: queue (%zu..%zu of %zu) or log (%zu of %zu) indices out of range", m->qhead,
                m->qcount, m->qcap, m->log_count, m->log_cap);
        return VMT_E_INTERNAL;
    }
    if (m->outstanding && (m->delivered.seq == 0 || m->delivered.seq != m->next_seq)) {
        vmt_why(why, why_len, "mem: outstanding event seq %llu is not the last delivered (%llu)",
                (unsigned long long)m->delivered.seq, (unsigned long long)m->next_seq);
        return VMT_E_INTERNAL;
    }
    vmt_status st = check_frames(m, why, why_len);
    if (!st)
        st = check_views(m, why, why_len);
    if (!st)
        st = check_vcpus(m, why, why_len);
    return st;
}
