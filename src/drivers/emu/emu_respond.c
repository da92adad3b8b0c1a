/*
 * drivers/emu/emu_respond.c — the monitor's answers to events and
 * injections.
 *
 * Design: a response that must perform the trapped access (CONTINUE with
 * the right granted, EMULATE against another view, FAST_STEP in another
 * view) is first tried on the reusable engine (vmtrap/emulate.h): one
 * instruction against the MMU context, no change to Unicorn's
 * translations; x87/MMX/SSE instructions with the vCPU's FXSAVE state
 * (vmt_emulate_full: read from Unicorn, written back only if it changed), so
 * a hidden read by vector code is one exit too. When the engine cannot (a special instruction, memory
 * outside RAM, a fault), the main CPU steps one instruction with the MMU
 * context changed (emu_begin_internal_step) and the run loop restores it
 * silently. DENY steps the instruction with the access skipped (reads see
 * the page, writes land in the sink copy). STEP reports SINGLESTEP after
 * one instruction; REINJECT delivers the guest's own #BP.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

/* ---- responses ---- */

/* Perform the one instruction at RIP with the reusable engine in `view`
 * with `grant` rights on grant_va (UINT64_MAX: every page): first without
 * vector state (the common case costs no FPU copy), then, if the engine
 * stopped in front of an x87/MMX/SSE instruction, with it. True when done;
 * false (nothing changed but A bits) when the main CPU has to step it: a
 * special instruction, an access the context forbids, memory past RAM, a
 * guest page fault, an exception. */
bool emu_engine_one(emu *e, vmt_view view, vmt_access grant, uint64_t grant_va)
{
    if (e->no_engine || (!e->engine && vmt_emulator_create(&e->engine, NULL, 0) != VMT_OK))
        return false;
    vmt_regs r;
    if (e->regs_from_event) {
        r = e->last.regs; /* read when the event was reported, unchanged since */
    } else {
        memset(&r, 0, sizeof r);
        emu_regs_read_engine(e, &r);
    }
    const vmt_regs before = r;
    vmt_view saved_view = e->mmu_view;
    vmt_access saved_grant = e->grant_kinds;
    uint64_t saved_grant_va = e->grant_va;
    e->mmu_view = view;
    e->grant_kinds = grant;
    e->grant_va = grant_va;
    vmt_emulate_mem mem = { emu_engine_read, emu_engine_write, e, NULL };
    vmt_emulate_result res;
    vmt_status st = vmt_emulate(e->engine, &r, &mem, 1, &res);
    bool fpu_used = false;
    if (st == VMT_OK && res.stop == VMT_EMULATE_SPECIAL && res.instructions == 0) {
        /* an x87/MMX/SSE instruction (or one the engine never performs):
         * again with the vCPU's vector state, so a hidden read by SSE code
         * stays one exit; the state goes back to Unicorn only if it changed */
        emu_fpu_read(e, &e->engine_fpu[0]);
        e->engine_fpu[1] = e->engine_fpu[0];
        st = vmt_emulate_full(e->engine, &r, &e->engine_fpu[1], &mem, 1, &res);
        fpu_used = true;
    }
    e->mmu_view = saved_view;
    e->grant_kinds = saved_grant;
    e->grant_va = saved_grant_va;
    if (st != VMT_OK || res.stop != VMT_EMULATE_DONE || res.instructions != 1)
        return false;
    emu_regs_write_engine(e, &before, &r);
    if (fpu_used) {
        if (memcmp(&e->engine_fpu[0], &e->engine_fpu[1], sizeof e->engine_fpu[0]) != 0)
            emu_fpu_write(e, &e->engine_fpu[1]);
        e->tstats.engine_fpu_steps++;
    }
    e->icount++;
    e->tstats.engine_steps++;
    return true;
}

vmt_status emu_begin_internal_step(emu *e, vmt_view view)
{
    e->step = EMU_STEP_INTERNAL;
    e->step_return_view = e->cur_view;
    e->step_restore_view = true;
    e->mmu_view = view;
    return VMT_OK;
}

vmt_status emu_op_respond(vmt_driver *d, const vmt_event *ev, const vmt_response *resp)
{
    emu *e = vmt_driver_impl(d);
    if (!e->awaiting_response)
        return vmt_driver_fail(d, VMT_E_BUSY, "no event is waiting for a response");
    if (ev->seq != e->last.seq)
        return vmt_driver_fail(d, VMT_E_INVAL, "response for event %" PRIu64 " but event %" PRIu64 " is pending",
                               ev->seq, e->last.seq);
    uint32_t a = resp->actions;
    const vmt_event *last = &e->last;
    if ((a & VMT_RESP_DENY) && last->kind != VMT_EVENT_MEM_ACCESS)
        return vmt_driver_fail(d, VMT_E_INVAL, "DENY answers memory-access events only");
    if ((a & VMT_RESP_REINJECT) && last->kind != VMT_EVENT_BREAKPOINT)
        return vmt_driver_fail(d, VMT_E_INVAL, "REINJECT answers breakpoint events only");
    vmt_view views_to_check[3] = { (a & VMT_RESP_SWITCH_VIEW) ? resp->new_view : 0,
                                   (a & VMT_RESP_FAST_STEP) ? resp->step_view : 0,
                                   (a & VMT_RESP_EMULATE) ? resp->emulate_view : 0 };
    for (int i = 0; i < 3; i++)
        if (views_to_check[i] >= e->max_views || !e->views[views_to_check[i]].live)
            return vmt_driver_fail(d, VMT_E_NOTFOUND, "response names view %u, which does not exist",
                                   views_to_check[i]);
    /* what the MMU's mapped rights depend on: revalidated below only when
     * the response changed it (an engine-performed EMULATE changes nothing
     * but memory, which invalidates itself) */
    const vmt_view mmu_before = e->mmu_view, cur_before = e->cur_view;
    const vmt_access grant_before = e->grant_kinds;
    const uint64_t grant_va_before = e->grant_va;
    if (a & VMT_RESP_SET_REGS) {
        char why[192];
        vmt_status st = emu_regs_write(e, &resp->regs, why, sizeof why);
        if (st)
            return vmt_driver_fail(d, st, "SET_REGS refused: %s", why);
    }
    e->awaiting_response = false;
    if (a & VMT_RESP_SWITCH_VIEW) {
        e->cur_view = resp->new_view;
        e->mmu_view = resp->new_view;
    }
    if ((a & VMT_RESP_IO_VALUE) && last->kind == VMT_EVENT_IO && !last->u.io.is_write) {
        uint64_t rax = 0;
        uc_reg_read(e->uc, UC_X86_REG_RAX, &rax);
        uint64_t mask = last->u.io.size == 4 ? 0xffffffffull : last->u.io.size == 2 ? 0xffffull : 0xffull;
        rax = (rax & ~mask) | (resp->io_value & mask);
        if (last->u.io.size == 4)
            rax &= 0xffffffffull; /* a 32-bit register write zero-extends */
        emu_wr(e, UC_X86_REG_RAX, rax);
    }
    if (a & VMT_RESP_REINJECT) {
        uint64_t ret = last->regs.rip + last->u.bp.insn_len;
        if (!(a & VMT_RESP_SET_REGS))
            emu_set_rip(e, last->regs.rip);
        if (!emu_deliver_exception(e, 3, false, 0, ret)) {
            e->stopped = true; /* reported by the next wait_event */
        }
    } else if (a & VMT_RESP_STEP) {
        e->step = EMU_STEP_USER;
        e->step_restore_view = false;
    } else if (a & VMT_RESP_FAST_STEP) {
        if (!emu_engine_one(e, resp->step_view, 0, 0))
            emu_begin_internal_step(e, resp->step_view);
    } else if (a & VMT_RESP_EMULATE) {
        /* performed against that view's mapping, whatever its rights */
        if (!emu_engine_one(e, resp->emulate_view, VMT_ACCESS_RWX, UINT64_MAX)) {
            emu_begin_internal_step(e, resp->emulate_view);
            e->grant_kinds = VMT_ACCESS_RWX;
            e->grant_va = UINT64_MAX;
        }
    } else if (last->kind == VMT_EVENT_MEM_ACCESS) {
        uint64_t page = last->u.mem.gva & ~(uint64_t)(EMU_PAGE - 1);
        if (a & VMT_RESP_DENY) {
            emu_begin_internal_step(e, e->cur_view);
            e->deny_active = true;
            e->deny_va = page;
            e->deny_kind = last->u.mem.access;
        } else {
            uint64_t gva = last->u.mem.in_pt_walk ? UINT64_MAX : page;
            if (!emu_engine_one(e, e->cur_view, last->u.mem.access, gva)) {
                emu_begin_internal_step(e, e->cur_view);
                e->grant_kinds = last->u.mem.access;
                e->grant_va = gva;
            }
        }
    }
    if (e->mmu_view != mmu_before || e->cur_view != cur_before || e->grant_kinds != grant_before ||
        e->grant_va != grant_va_before || e->deny_active || e->step != EMU_STEP_NONE)
        emu_tlb_revalidate(e);
    return VMT_OK;
}

vmt_status emu_op_inject(vmt_driver *d, vmt_vcpu vcpu, const vmt_injection *inj)
{
    emu *e = vmt_driver_impl(d);
    if (vcpu != 0)
        return vmt_driver_fail(d, VMT_E_NOTFOUND, "no vCPU %u (the emulator has one)", vcpu);
    if (inj->vector != 3 && inj->vector != 14)
        return vmt_driver_fail(d, VMT_E_NOTSUP, "only #BP and #PF can be injected (vector %u)", inj->vector);
    if (inj->vector == 14)
        e->cr2 = inj->cr2;
    if (!emu_deliver_exception(e, inj->vector, inj->vector == 14, inj->error_code, emu_rip(e))) {
        e->stopped = true;
        return vmt_driver_fail(d, VMT_E_STOPPED, "injection failed: %s", e->stop.message);
    }
    return VMT_OK;
}
