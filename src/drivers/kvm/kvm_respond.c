/*
 * drivers/kvm/kvm_respond.c — applying a response to the pending event.
 *
 * Design: the response is checked against the event first (DENY/EMULATE
 * answer memory events, IO_VALUE a port read, views must exist), then
 * applied in the order event.h defines: SWITCH_VIEW, the access itself
 * (where a held-back store lands, what a trapped read returns), the step
 * to arm, SET_REGS last. Nothing runs the guest here except the one
 * immediate-exit re-entry that completes a pending I/O or MMIO instruction
 * before SET_REGS, so the registers set are never overwritten by KVM
 * finishing that instruction.
 */
#include <inttypes.h>
#include <string.h>

#include "drivers/kvm/kvm_internal.h"

/* want := done, except the fields where want differs from orig. */
static void regs_merge(vmt_regs *want, const vmt_regs *orig, const vmt_regs *done)
{
#define M(f) want->f = (want->f != orig->f) ? want->f : done->f
    M(rax); M(rbx); M(rcx); M(rdx); M(rsi); M(rdi); M(rbp); M(rsp);
    M(r8); M(r9); M(r10); M(r11); M(r12); M(r13); M(r14); M(r15);
    M(rip); M(rflags);
    M(cr0); M(cr2); M(cr3); M(cr4); M(cr8); M(efer);
    M(fs_base); M(gs_base); M(kernel_gs_base);
    M(gdtr_base); M(idtr_base); M(gdtr_limit); M(idtr_limit);
    M(cs); M(ss); M(ds); M(es); M(fs); M(gs);
    M(dr0); M(dr1); M(dr2); M(dr3); M(dr6); M(dr7);
#undef M
}

static vmt_status check_resp_view(kvm_drv *k, vmt_view v, const char *what)
{
    if (v >= k->max_views || !k->views[v].used)
        return vmt_driver_fail(k->d, VMT_E_NOTFOUND, "%s names view %u, which does not exist", what, v);
    return VMT_OK;
}

vmt_status kvm_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp)
{
    kvm_drv *k = vmt_driver_impl(d);
    uint32_t a = resp->actions;
    if (!k->in_event) {
        if (ev->kind == VMT_EVENT_STOPPED)
            return VMT_OK;
        return vmt_driver_fail(d, VMT_E_INVAL, "no event awaits a response");
    }
    if (ev->seq != k->ev.seq)
        return vmt_driver_fail(d, VMT_E_INVAL, "response to event %" PRIu64 ", but event %" PRIu64 " is pending",
                               ev->seq, k->ev.seq);
    vmt_event_kind kind = k->ev.kind;
    if ((a & VMT_RESP_DENY) && kind != VMT_EVENT_MEM_ACCESS)
        return vmt_driver_fail(d, VMT_E_INVAL, "DENY answers memory-access events only (got %s)",
                               vmt_event_kind_name(kind));
    if ((a & VMT_RESP_EMULATE) && kind != VMT_EVENT_MEM_ACCESS && kind != VMT_EVENT_BREAKPOINT &&
        kind != VMT_EVENT_HW_BREAKPOINT && kind != VMT_EVENT_SINGLESTEP)
        return vmt_driver_fail(d, VMT_E_INVAL, "EMULATE cannot answer a %s event", vmt_event_kind_name(kind));
    if ((a & VMT_RESP_IO_VALUE) && !(kind == VMT_EVENT_IO && !k->ev.u.io.is_write))
        return vmt_driver_fail(d, VMT_E_INVAL, "IO_VALUE answers a port read only");
    vmt_status st;
    if ((a & VMT_RESP_FAST_STEP) && (st = check_resp_view(k, resp->step_view, "FAST_STEP")))
        return st;
    if ((a & VMT_RESP_EMULATE) && (st = check_resp_view(k, resp->emulate_view, "EMULATE")))
        return st;
    if ((a & VMT_RESP_SWITCH_VIEW) && (st = check_resp_view(k, resp->new_view, "SWITCH_VIEW")))
        return st;
    if ((a & VMT_RESP_SWITCH_VIEW) && (st = kvm_switch_view(k, resp->new_view, false)))
        return st;

    kvm_step step = { .fast_view = VMT_VIEW_INVALID };
    switch (kind) {
    case VMT_EVENT_MEM_ACCESS: {
        const vmt_mem_access_info *m = &k->ev.u.mem;
        vmt_view v = (a & VMT_RESP_EMULATE) ? resp->emulate_view : (a & VMT_RESP_FAST_STEP) ? resp->step_view
                                                                                            : k->cur_view;
        if (m->access == VMT_ACCESS_W) {
            uint8_t bytes[8];
            memcpy(bytes, &m->value, sizeof bytes);
            if (!(a & VMT_RESP_DENY))
                kvm_write_through(k, v, m->gpa, bytes, m->size); /* DENY: the store is dropped */
        } else if (a & VMT_RESP_DENY) {
            memset(k->run->mmio.data, 0, m->size); /* a skipped read returns zeros */
        } else {
            kvm_read_through(k, v, m->gpa, k->run->mmio.data, m->size);
        }
        if (a & VMT_RESP_STEP)
            step = (kvm_step){ .active = true, .report = true, .fast_view = VMT_VIEW_INVALID };
        break;
    }
    case VMT_EVENT_IO:
        if (!k->ev.u.io.is_write) {
            uint32_t sz = k->run->io.size;
            uint32_t v = (a & VMT_RESP_IO_VALUE) ? resp->io_value : 0xffffffffu;
            memcpy(kvm_io_data(k) + (size_t)k->io_index * sz, &v, sz);
        }
        if (a & VMT_RESP_STEP)
            step = (kvm_step){ .active = true, .report = true, .fast_view = VMT_VIEW_INVALID };
        if (k->io_index + 1 < k->run->io.count) {
            k->io_index++;
            kvm_io_event(k);
            k->queued_event = true;
        }
        break;
    case VMT_EVENT_BREAKPOINT:
    case VMT_EVENT_HW_BREAKPOINT:
    case VMT_EVENT_SINGLESTEP: {
        bool hw = kind == VMT_EVENT_HW_BREAKPOINT;
        if (a & VMT_RESP_REINJECT) {
            if ((st = kvm_reinject_bp(k)))
                return st;
        } else if (a & VMT_RESP_STEP) {
            step = (kvm_step){ .active = true, .report = true, .hw_off = hw, .fast_view = VMT_VIEW_INVALID };
        } else if ((a & VMT_RESP_EMULATE) && !(a & VMT_RESP_SET_REGS) && kvm_engine_emulate(k, resp->emulate_view)) {
            /* performed in the monitor by the engine: one exit */
        } else if (a & (VMT_RESP_FAST_STEP | VMT_RESP_EMULATE)) {
            /* without the engine (or what it refuses) EMULATE is one step
             * through emulate_view's mapping, like FAST_STEP (two exits) */
            vmt_view through = (a & VMT_RESP_EMULATE) ? resp->emulate_view : resp->step_view;
            step = (kvm_step){ .active = true, .hw_off = hw, .fast_view = through };
        } else if (hw) {
            /* RF is not honoured everywhere: step past the breakpoint with it off */
            step = (kvm_step){ .active = true, .hw_off = true, .fast_view = VMT_VIEW_INVALID };
        }
        break;
    }
    default:
        break;
    }
    /* a step under way when the stepped instruction raised this I/O or
     * write event ends once that instruction completes */
    if (!step.active && k->step.active && (kind == VMT_EVENT_IO || kind == VMT_EVENT_MEM_ACCESS))
        step = k->step;
    if (a & VMT_RESP_SET_REGS) {
        vmt_regs want = resp->regs;
        if (k->need_completion) {
            /* Complete the instruction first (KVM may or may not have moved
             * rip yet, and an IN writes rax), then apply only the fields
             * the handler changed from the event's registers. */
            bool exited;
            if ((st = kvm_complete_pending(k, &exited)))
                return st;
            if (exited) {
                /* the instruction needs another exit (a split MMIO access):
                 * the rest of the response stands, the registers cannot be
                 * set mid-instruction; the next wait handles that exit */
                k->exit_pending = true;
                k->step = step;
                k->in_event = false;
                return vmt_driver_fail(d, VMT_E_BUSY, "the instruction exited again while completing; registers "
                                       "not set (the rest of the response was applied)");
            }
            step.complete = step.active;
            vmt_regs done;
            if ((st = kvm_get_regs(k, &done)))
                return st;
            regs_merge(&want, &k->ev.regs, &done);
        }
        if ((st = kvm_set_regs(k, &want)))
            return st;
    }
    k->step = step;
    k->in_event = false; /* a queued string-I/O element is delivered by the next wait_event */
    return VMT_OK;
}
