/*
 * drivers/mem/mem_events.c — events without a CPU.
 *
 * A test queues events (vmt_mem_push_event); wait_event hands them out in
 * order, never blocking: an empty queue or a paused VM is VMT_E_TIMEOUT at
 * once (a paused VM with no timeout is VMT_E_BUSY, as driver.h says). Delivery stamps seq and the vCPU's current view and loads the
 * event's registers into the vCPU, as if the CPU had run up to that point.
 * A delivered event (other than STOPPED) must be answered before the next
 * one is handed out, and only that event can be answered: this catches
 * callers that lose or double-answer events, which a real driver would
 * punish with a hung or corrupted guest.
 *
 * respond() applies what a CPU-less driver can really do (SWITCH_VIEW,
 * SET_REGS) after validating everything, and records the response for the
 * test (vmt_mem_last_response); the execution actions are only recorded.
 */
#include <stdlib.h>
#include <string.h>

#include "drivers/mem/mem_internal.h"

vmt_status vmt_mem_push_event(vmt_driver *d, const vmt_event *ev)
{
    mem_drv *m = mem_of(d);
    if (!m)
        return VMT_E_INVAL;
    if (!ev || ev->kind == VMT_EVENT_NONE || (unsigned)ev->kind >= VMT_EVENT_KIND_COUNT)
        return vmt_driver_fail(d, VMT_E_INVAL, "push_event: bad event kind %d", ev ? (int)ev->kind : -1);
    if (ev->vcpu >= m->cfg.vcpus)
        return vmt_driver_fail(d, VMT_E_INVAL, "push_event: no vCPU %u", ev->vcpu);
    if (m->qhead == m->qcount)
        m->qhead = m->qcount = 0;
    if (m->qcount == m->qcap) {
        size_t cap = m->qcap ? m->qcap * 2 : 16;
        vmt_event *n = realloc(m->queue, cap * sizeof *n);
        if (!n)
            return vmt_driver_fail(d, VMT_E_NOMEM, "push_event: queue cannot grow");
        m->queue = n;
        m->qcap = cap;
    }
    m->queue[m->qcount++] = *ev;
    return VMT_OK;
}

size_t vmt_mem_pending_events(const vmt_driver *d)
{
    mem_drv *m = mem_of(d);
    return m ? m->qcount - m->qhead : 0;
}

vmt_status vmt_mem_last_response(const vmt_driver *d, vmt_event *ev, vmt_response *resp)
{
    mem_drv *m = mem_of(d);
    if (!m)
        return VMT_E_INVAL;
    if (!m->has_response)
        return VMT_E_NOTFOUND;
    if (ev)
        *ev = m->answered;
    if (resp)
        *resp = m->response;
    return VMT_OK;
}

vmt_status mem_op_wait_event(vmt_driver *d, int timeout_ms, vmt_event *ev)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_WAIT_EVENT };
    vmt_status st = mem_begin(d, m, &c);
    if (st)
        return mem_end(m, &c, st);
    if (m->outstanding)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_BUSY, "wait_event: event %llu (%s) has not been answered",
                                              (unsigned long long)m->delivered.seq,
                                              vmt_event_kind_name(m->delivered.kind)));
    if (m->paused && timeout_ms < 0)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_BUSY,
                                              "wait_event: the VM is paused and no timeout was given"));
    if (m->paused)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_TIMEOUT, "wait_event: the VM is paused"));
    if (m->qhead == m->qcount)
        return mem_end(m, &c, vmt_driver_fail(d, VMT_E_TIMEOUT, "wait_event: no event queued"));
    vmt_event e = m->queue[m->qhead++];
    e.seq = ++m->next_seq;
    e.view = m->vcpus[e.vcpu].view;
    m->vcpus[e.vcpu].regs = e.regs;
    m->stats.events[e.kind]++;
    m->stats.exits++;
    m->outstanding = e.kind != VMT_EVENT_STOPPED;
    m->delivered = e;
    *ev = e;
    c.vcpu = e.vcpu;
    c.view = e.view;
    c.index = (uint32_t)e.kind;
    c.seq = e.seq;
    return mem_end(m, &c, VMT_OK);
}

static vmt_status check_response(vmt_driver *d, mem_drv *m, const vmt_event *ev, const vmt_response *r)
{
    if (!m->outstanding)
        return vmt_driver_fail(d, VMT_E_INVAL, "respond: no event is waiting for a response");
    if (ev->seq != m->delivered.seq)
        return vmt_driver_fail(d, VMT_E_INVAL, "respond: event %llu is not the waiting one (%llu)",
                               (unsigned long long)ev->seq, (unsigned long long)m->delivered.seq);
    struct {
        uint32_t action;
        vmt_view view;
        const char *what;
    } views[] = {
        { VMT_RESP_SWITCH_VIEW, r->new_view, "SWITCH_VIEW" },
        { VMT_RESP_FAST_STEP, r->step_view, "FAST_STEP" },
        { VMT_RESP_EMULATE, r->emulate_view, "EMULATE" },
    };
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++)
        if ((r->actions & views[i].action) && !mem_view_live(m, views[i].view))
            return vmt_driver_fail(d, VMT_E_NOTFOUND, "respond: %s to view %u, which does not exist", views[i].what,
                                   views[i].view);
    return VMT_OK;
}

vmt_status mem_op_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_RESPOND, .vcpu = ev->vcpu, .seq = ev->seq, .actions = resp->actions };
    if (resp->actions & VMT_RESP_SWITCH_VIEW)
        c.view = resp->new_view;
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        st = check_response(d, m, ev, resp);
    if (st)
        return mem_end(m, &c, st);
    vmt_vcpu vcpu = m->delivered.vcpu;
    if (resp->actions & VMT_RESP_SWITCH_VIEW)
        mem_switch_view(m, vcpu, resp->new_view);
    if (resp->actions & VMT_RESP_SET_REGS)
        m->vcpus[vcpu].regs = resp->regs;
    m->outstanding = false;
    m->has_response = true;
    m->answered = m->delivered;
    m->response = *resp;
    return mem_end(m, &c, VMT_OK);
}

vmt_status mem_op_stats(vmt_driver *d, vmt_driver_stats *out)
{
    mem_drv *m = mem_of(d);
    vmt_mem_call c = { .op = VMT_MEM_OP_STATS };
    vmt_status st = mem_begin(d, m, &c);
    if (!st)
        *out = m->stats;
    return mem_end(m, &c, st);
}

void mem_events_free(mem_drv *m)
{
    free(m->queue);
    m->queue = NULL;
}
