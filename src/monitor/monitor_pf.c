/*
 * monitor_pf.c — page-fault injection for hooks (vmt_hit_inject_pf; the
 * design and why the #PF goes in at the hit are in include/vmtrap/monitor.h).
 *
 * State: a table of pages (root, page VA) with the #PFs injected for each
 * (bounded by cfg.inject_pf_tries; at most MON_MAX_PF_PAGES pages, then
 * requests for new pages are refused), the request of the event being
 * handled (pf_requested/pf_va, valid only while its hooks run:
 * cur_event/cur_resp), and per vCPU the call a #PF was injected for (rip,
 * rsp, root) so its next hit there is recognised as the same call.
 * Invariants: every page's tries <= cfg.inject_pf_tries; cur_event is NULL
 * outside hook calls. Failure atomicity: a refused request changes nothing
 * but stats.pf_refused; a driver that fails the injection fails the event.
 * Threading: the monitor's (one thread).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "monitor/monitor_internal.h"
#include "vmtrap/driver.h"

#define PF_ERROR_USER_READ 0x4u          /* U=1, W=0, P=0 */
#define PF_RFLAGS_IF (1ULL << 9)
#define PF_USER_TOP 0x0000800000000000ULL /* lower canonical half ends here */
#define PF_PAGE_MASK (~0xfffULL)

static size_t page_slot(const vmt_monitor *m, vmt_pa root, vmt_va va)
{
    for (size_t i = 0; i < m->npf_pages; i++)
        if (m->pf_pages[i].root == root && m->pf_pages[i].page == (va & PF_PAGE_MASK))
            return i;
    return SIZE_MAX;
}

uint32_t vmt_monitor_pf_tries(const vmt_monitor *m, vmt_pa root, vmt_va va)
{
    size_t i = m ? page_slot(m, root, va) : SIZE_MAX;
    return i == SIZE_MAX ? 0 : m->pf_pages[i].tries;
}

static vmt_status refuse(vmt_monitor *m, vmt_status st, char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static vmt_status refuse(vmt_monitor *m, vmt_status st, char *why, size_t why_len, const char *fmt, ...)
{
    m->stats.pf_refused++;
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

vmt_status vmt_hit_inject_pf(const vmt_hit *hit, vmt_va va, char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!hit || !hit->monitor)
        return VMT_E_INVAL;
    vmt_monitor *m = hit->monitor;
    if (!m->cfg.inject_pf_tries)
        return refuse(m, VMT_E_NOTSUP, why, why_len, "page-fault injection is off for this run");
    if (!vmt_driver_has(m->driver, VMT_CAP_INJECT_PF))
        return refuse(m, VMT_E_NOTSUP, why, why_len, "the driver cannot inject a #PF");
    if (!m->cur_event || !m->cur_resp || m->cur_event->vcpu != hit->vcpu)
        return refuse(m, VMT_E_BUSY, why, why_len, "not asked from inside a hook callback");
    if (hit->is_return || hit->alias)
        return refuse(m, VMT_E_BUSY, why, why_len, "not at a hooked entry (%s)", hit->is_return ? "return" : "alias");
    if (!(hit->regs.rflags & PF_RFLAGS_IF))
        return refuse(m, VMT_E_BUSY, why, why_len, "interrupts are disabled at the hit (not a safe point)");
    uint32_t a = m->cur_resp->actions;
    if (a & ~(uint32_t)(VMT_RESP_EMULATE | VMT_RESP_FAST_STEP))
        return refuse(m, VMT_E_BUSY, why, why_len, "the breakpoint manager has a step of its own in flight");
    if (va < 0x1000 || va >= PF_USER_TOP)
        return refuse(m, VMT_E_RANGE, why, why_len, "0x%" PRIx64 " is not a user address", va);
    size_t i = page_slot(m, hit->root, va);
    if (i != SIZE_MAX && m->pf_pages[i].tries >= m->cfg.inject_pf_tries)
        return refuse(m, VMT_E_RANGE, why, why_len, "%" PRIu32 " #PF injected, still not present",
                      m->pf_pages[i].tries);
    if (i == SIZE_MAX && m->npf_pages == MON_MAX_PF_PAGES)
        return refuse(m, VMT_E_RANGE, why, why_len, "page table of injections is full (%d pages)", MON_MAX_PF_PAGES);
    m->pf_requested = true; /* the first request of the event wins; later ones are the same call */
    if (!m->pf_va)
        m->pf_va = va;
    return VMT_OK;
}

bool mon_pf_is_retry(vmt_monitor *m, const vmt_event *ev, unsigned *injected, uint64_t *count)
{
    if (ev->vcpu >= MON_MAX_VCPUS || !m->pf_retry[ev->vcpu].armed)
        return false;
    const mon_pf_call *r = &m->pf_retry[ev->vcpu];
    if (r->rip != ev->regs.rip || r->rsp != ev->regs.rsp || r->root != (ev->regs.cr3 & VMT_CR3_ADDR_MASK))
        return false;
    m->pf_cur_retry = true;
    *injected = r->injected;
    *count = r->count;
    return true;
}

vmt_status mon_pf_after_hooks(vmt_monitor *m, const vmt_event *ev, vmt_response *resp, uint64_t count)
{
    bool want = m->pf_requested, retry = m->pf_cur_retry;
    vmt_va va = m->pf_va;
    m->pf_requested = false;
    m->pf_cur_retry = false;
    m->pf_va = 0;
    if (!want) {
        if (retry && ev->vcpu < MON_MAX_VCPUS)
            m->pf_retry[ev->vcpu].armed = false; /* the call went on: done with it */
        return VMT_OK;
    }
    vmt_pa root = ev->regs.cr3 & VMT_CR3_ADDR_MASK;
    size_t i = page_slot(m, root, va);
    if (i == SIZE_MAX) {
        if (m->npf_pages == MON_MAX_PF_PAGES) /* checked at the request */
            return vmt_errbuf_set(&m->err, VMT_E_INTERNAL, "page-fault injection: page table full");
        i = m->npf_pages++;
        m->pf_pages[i].root = root;
        m->pf_pages[i].page = va & PF_PAGE_MASK;
        m->pf_pages[i].tries = 0;
    }
    vmt_injection inj = { .vector = 14, .has_error_code = true, .error_code = PF_ERROR_USER_READ, .cr2 = va };
    vmt_status st = vmt_drv_inject(m->driver, ev->vcpu, &inj);
    if (st != VMT_OK)
        return vmt_errbuf_set(&m->err, st, "injecting a #PF at 0x%" PRIx64 " (rip 0x%" PRIx64 "): %s", va,
                              ev->regs.rip, vmt_driver_error(m->driver));
    m->pf_pages[i].tries++;
    m->stats.pf_injected++;
    /* no step over the hooked instruction: the handler's iret comes back to it */
    *resp = vmt_response_continue();
    if (ev->vcpu < MON_MAX_VCPUS) {
        mon_pf_call *r = &m->pf_retry[ev->vcpu];
        unsigned before = retry ? r->injected : 0;
        r->armed = true;
        r->count = count;
        r->rip = ev->regs.rip;
        r->rsp = ev->regs.rsp;
        r->root = root;
        r->injected = before + 1;
    }
    return VMT_OK;
}
