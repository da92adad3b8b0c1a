/*
 * drivers/emu/emu_irq.c — external interrupts from the bus, HLT and the
 * devices' deadlines in virtual time.
 *
 * Design: the bus (vmtrap/bus.h) owns the interrupt controllers and timers;
 * the driver owns time. Before every run slice the driver tells the bus the
 * guest time (advance), learns the next deadline, converts it into an
 * instruction count (irq_check_at) at which the code hook stops the CPU, and
 * delivers the pending interrupt when the guest can take it: IF = 1, no
 * STI / MOV SS shadow (QEMU's HF_INHIBIT_IRQ bit of hflags, read from a
 * saved context), no step in progress. An interrupt the guest cannot take
 * yet is retried after the next instruction that may open the window (STI,
 * POPF, IRET, SYSRET, SYSEXIT: the code hook watches for them only while one
 * is waiting) and after every bus access (an EOI or a timer write may raise
 * the next one). NMIs are taken whenever no NMI handler is running.
 *
 * HLT: Unicorn returns from uc_emu_start after it. With IF = 0 the run
 * stops (VMT_STOP_HALT) as before. With IF = 1 the vCPU sleeps: guest time
 * jumps to the bus's next deadline (the jump is added to skip_ns, so the
 * TSC and every device see it), until an interrupt is pending; no deadline
 * ever and nothing pending stops the run with a reason.
 *
 * Determinism: deadlines are in guest time, which depends only on retired
 * instructions and HLT skips, so the same guest and bus give the same
 * interrupt points run after run.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "drivers/emu/emu_priv.h"

#define HF_INHIBIT_IRQ (1u << 3)
#define EMU_MAX_HLT_SKIPS 1000000

static bool have_bus(const emu *e) { return e->bus.ops != NULL; }

/* Instruction count at which guest time reaches ns. */
static uint64_t icount_at(const emu *e, uint64_t ns)
{
    uint64_t base = e->start_ns + e->skip_ns;
    if (ns <= base)
        return e->icount;
    unsigned __int128 n = (unsigned __int128)(ns - base) * e->ips + 999999999u;
    n /= 1000000000u;
    n += e->clock_icount;
    if (n > UINT64_MAX / 2)
        return UINT64_MAX;
    return (uint64_t)n > e->icount ? (uint64_t)n : e->icount;
}

static uint64_t advance(emu *e)
{
    if (!e->bus.ops || !e->bus.ops->advance)
        return UINT64_MAX;
    return e->bus.ops->advance(e->bus.ctx, emu_now_ns(e));
}

static bool in_shadow(emu *e)
{
    uc_context_save(e->uc, e->cpl_ctx);
    uint32_t hf;
    memcpy(&hf, (const char *)e->cpl_ctx + e->hflags_off, 4);
    return (hf & HF_INHIBIT_IRQ) != 0;
}

void emu_irq_after_bus(emu *e)
{
    if (have_bus(e))
        e->irq_check_at = e->icount;
}

bool emu_irq_poll(emu *e)
{
    if (!have_bus(e)) {
        e->irq_check_at = UINT64_MAX;
        return true;
    }
    uint64_t next = advance(e);
    e->irq_check_at = next == UINT64_MAX ? UINT64_MAX : icount_at(e, next);
    if (e->irq_check_at <= e->icount)
        e->irq_check_at = e->icount + 1; /* progress: at least one instruction */
    e->irq_waiting = false;
    if (e->step != EMU_STEP_NONE || e->awaiting_response)
        return true;
    uint64_t rip = emu_rip(e);
    if (e->bus.ops->nmi_take && !e->nmi_blocked && e->bus.ops->nmi_take(e->bus.ctx, 0)) {
        e->nmi_blocked = true; /* until the guest's IRET (not tracked: one NMI at a time) */
        return emu_deliver_interrupt(e, 2, rip, false);
    }
    if (!e->bus.ops->irq_pending)
        return true;
    int v = e->bus.ops->irq_pending(e->bus.ctx, 0);
    if (v < 0)
        return true;
    uint64_t rflags = emu_rd(e, UC_X86_REG_RFLAGS);
    if (!(rflags & VMT_RFLAGS_IF)) {
        e->irq_waiting = true;
        return true;
    }
    if (in_shadow(e)) {
        e->irq_check_at = e->icount + 1;
        return true;
    }
    if (e->bus.ops->irq_ack)
        e->bus.ops->irq_ack(e->bus.ctx, 0, (uint8_t)v);
    e->irqs_delivered++;
    return emu_deliver_interrupt(e, (uint8_t)v, rip, false);
}

emu_hlt_result emu_irq_hlt(emu *e, uint64_t rip_after)
{
    uint64_t rflags = emu_rd(e, UC_X86_REG_RFLAGS);
    if (!(rflags & VMT_RFLAGS_IF)) {
        e->stop.reason = VMT_STOP_HALT;
        snprintf(e->stop.message, sizeof e->stop.message, "hlt at rip 0x%" PRIx64 " with interrupts disabled",
                 rip_after - 1);
        return EMU_HLT_STOP;
    }
    if (!have_bus(e)) {
        e->stop.reason = VMT_STOP_HALT;
        snprintf(e->stop.message, sizeof e->stop.message,
                 "hlt at rip 0x%" PRIx64 " with interrupts enabled: no interrupt source", rip_after - 1);
        return EMU_HLT_STOP;
    }
    e->halted = true;
    for (int i = 0; i < EMU_MAX_HLT_SKIPS; i++) {
        uint64_t next = advance(e);
        bool nmi = e->bus.ops->nmi_take && !e->nmi_blocked && e->bus.ops->nmi_take(e->bus.ctx, 0);
        if (nmi) {
            e->nmi_blocked = true;
            return emu_deliver_interrupt(e, 2, rip_after, false) ? EMU_HLT_WOKE : EMU_HLT_STOP;
        }
        int v = e->bus.ops->irq_pending ? e->bus.ops->irq_pending(e->bus.ctx, 0) : -1;
        if (v >= 0) {
            if (e->bus.ops->irq_ack)
                e->bus.ops->irq_ack(e->bus.ctx, 0, (uint8_t)v);
            e->irqs_delivered++;
            e->irq_check_at = e->icount + 1;
            return emu_deliver_interrupt(e, (uint8_t)v, rip_after, false) ? EMU_HLT_WOKE : EMU_HLT_STOP;
        }
        uint64_t now = emu_now_ns(e);
        if (next == UINT64_MAX) {
            e->stop.reason = VMT_STOP_HALT;
            snprintf(e->stop.message, sizeof e->stop.message,
                     "hlt at rip 0x%" PRIx64 " with interrupts enabled, nothing pending and no device deadline: "
                     "the guest would sleep forever", rip_after - 1);
            return EMU_HLT_STOP;
        }
        if (next > now) {
            e->skip_ns += next - now;
            e->hlt_skipped_ns += next - now;
        }
    }
    e->stop.reason = VMT_STOP_HALT;
    snprintf(e->stop.message, sizeof e->stop.message,
             "hlt at rip 0x%" PRIx64 ": the bus's deadlines passed %d times without an interrupt", rip_after - 1,
             EMU_MAX_HLT_SKIPS);
    return EMU_HLT_STOP;
}
